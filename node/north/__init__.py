"""North-bound publishing: every result to the plant over MQTT, as a Sparkplug B edge node.

``sparkplug`` is the codec (topics, payloads, sequence numbers) and may be imported by any
Sparkplug peer, the fleet host included; ``metrics`` names what lineside publishes;
``publisher`` is the edge node that follows the audit store, off the line's path, and
``factory`` builds it from the node's config.
"""

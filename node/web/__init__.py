"""``lineside web``: the line at a glance in a browser, in a process of its own.

It reads the audit store read-only, follows the node live as an OPC UA client of the
node's own server, and sends reviews and commands back through the node's OPC UA
methods as the logged-in user, so the node stays the one source of truth and its users
and roles the one permission model. Nothing it does can take the line's time.
"""

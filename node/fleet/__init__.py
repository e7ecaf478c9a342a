"""``lineside fleet``: the Sparkplug B primary host for a plant's lineside nodes.

It subscribes to every lineside edge node on a broker, tracks their births, deaths and
sequence numbers, and shows one table of the plant's lines (state, parts/s, reject %,
fail-safes, budget use, model, last seen), in the terminal and as JSON.
"""

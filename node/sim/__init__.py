"""The simulated line as the node sees it: the sim drivers assembled from config,
with parts rendered by ``models.synth`` (``line``), and in-memory stand-ins for the
node behind the HMI server (``hmi``)."""

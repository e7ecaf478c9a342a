"""The simulated hardware: one belt world, its camera, encoder and reject output.

``world.SimWorld`` is the physical line (belt kinematics, parts, actuator);
``camera.SimCamera``, ``plc.SimEncoder`` and ``plc.SimRejectOutput`` are the
drivers that read and act on it, selectable from config like the real ones.
``fakegv.FakeGvCamera`` runs Aravis' fake GigE Vision camera as a real peer.
"""

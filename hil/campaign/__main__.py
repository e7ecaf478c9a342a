"""``python -m hil.campaign``: the command lives in ``hil.campaign``; this file only runs it.

The campaign is a package with a ``__main__`` so that the processes it spawns (the PLC
emulator, the node's HMI server) do not import the whole campaign again: ``multiprocessing``
re-runs the parent's main module in every spawned child unless it is a ``__main__.py``,
and the campaign's imports (the scorer, the renderer, SciPy) cost each child about a
second of CPU while the node starts beside it.
"""

import sys

from hil.campaign import main

sys.exit(main())

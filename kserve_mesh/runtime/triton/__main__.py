"""``python -m kserve_mesh.runtime.triton``: see ``main.py``."""

import sys

from kserve_mesh.runtime.triton.main import main

sys.exit(main())

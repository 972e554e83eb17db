"""``python -m kserve_mesh.runtime.mlserver``: see ``main.py``."""

import sys

from kserve_mesh.runtime.mlserver.main import main

sys.exit(main())

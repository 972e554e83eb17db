"""``python -m kserve_mesh.kube.controller``: the same process as ``kserve-mesh controller``."""

import sys

from kserve_mesh.kube.controller.main import main

sys.exit(main())

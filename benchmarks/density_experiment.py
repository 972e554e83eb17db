"""The density run with instances that carry proposed mesh fixes (``density/patched_instance.py``).

    DENSITY_PATCH=lru,chunk,freeze python benchmarks/density_experiment.py [density.py options]

Same phases, table and JSON as ``density.py``; only the instance processes differ. Use it to see
what a fix buys before it lands in ``kserve_mesh``, and drop it once the fixes have landed.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import density  # noqa: E402

LAUNCHER = (sys.executable, str(HERE / "density" / "patched_instance.py"))


if __name__ == "__main__":
    sys.exit(density.main(sys.argv[1:], launcher=LAUNCHER))

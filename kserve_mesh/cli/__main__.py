"""``python -m kserve_mesh.cli``: the ``kserve-mesh`` command."""

from kserve_mesh.cli import main

main()

"""The notebook widget of kserve-mesh, built on the light client SDK (``kserve_mesh.client``).

    from kserve_mesh.jupyter_ext import MeshPanel
    display(MeshPanel("http://127.0.0.1:8008"))

Needs the ``jupyter`` extra (``pip install 'kserve-mesh[jupyter]'``: JupyterLab 4, ipywidgets 8).
"""

from kserve_mesh.jupyter_ext.panel import MODEL_FORMATS, MeshPanel

__all__ = ["MODEL_FORMATS", "MeshPanel"]

"""The Jupyter server extension of kserve-mesh: the JupyterLab extension's proxy to the mesh.

The browser talks to ``<base_url>/kserve-mesh/…`` on the Jupyter server (Jupyter's own
authentication and XSRF checks); this extension calls the mesh with the light client SDK
(``kserve_mesh.client``), so the mesh's address and credentials never reach the browser. Where the
mesh is, and how to reach it, comes from Jupyter's config or the environment (``MeshConfig``):

    c.KServeMesh.url = "https://mesh.example:8008"      # else $KSERVE_MESH_URL, else http://127.0.0.1:8008
    c.KServeMesh.token = "…"                            # else $KSERVE_MESH_TOKEN
    c.KServeMesh.ca_cert = "/etc/mesh/ca.pem"           # else $KSERVE_MESH_CA_CERT (client_cert, client_key alike)

It is enabled by ``etc/jupyter/jupyter_server_config.d/kserve_mesh.json`` (installed with the
package); the prebuilt labextension (``share/jupyter/labextensions/kserve-mesh-jupyterlab``) is
built from ``jupyter_ext/`` at the top of the repository.
"""

from __future__ import annotations

from typing import Any

LABEXTENSION = "kserve-mesh-jupyterlab"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kserve_mesh.jupyter_ext.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from kserve_mesh.jupyter_ext.server.config import MeshConfig
    from kserve_mesh.jupyter_ext.server.handlers import setup_handlers

    config = MeshConfig(config=server_app.config)
    setup_handlers(server_app.web_app, config, server_app.contents_manager)
    server_app.log.info("kserve-mesh: the JupyterLab extension proxies to the mesh at %s", config.url)


# jupyter_server < 2 looked for this name
load_jupyter_server_extension = _load_jupyter_server_extension

"""Where the mesh is and how to reach it: Jupyter config (``c.KServeMesh.*``), else the environment
variables the CLI and the SDK read (``KSERVE_MESH_URL``, ``KSERVE_MESH_TOKEN``, ``KSERVE_MESH_CA_CERT``,
``KSERVE_MESH_CLIENT_CERT``, ``KSERVE_MESH_CLIENT_KEY``)."""

from __future__ import annotations

import os
import threading

from traitlets import Float, Unicode, default
from traitlets.config import Configurable

from kserve_mesh.client import DEFAULT_URL, MeshClient, MeshClientError, MeshUnavailableError, connect


class KServeMesh(Configurable):
    """The mesh the JupyterLab extension proxies to: Jupyter config section ``c.KServeMesh``."""

    url = Unicode(help="REST URL of the mesh; default $KSERVE_MESH_URL, else http://127.0.0.1:8008").tag(config=True)
    token = Unicode(None, allow_none=True,
                    help="Bearer token for the mesh; default $KSERVE_MESH_TOKEN").tag(config=True)
    ca_cert = Unicode(None, allow_none=True,
                      help="PEM CA bundle for an https:// mesh; default $KSERVE_MESH_CA_CERT").tag(config=True)
    client_cert = Unicode(None, allow_none=True,
                          help="PEM client certificate (mTLS); default $KSERVE_MESH_CLIENT_CERT").tag(config=True)
    client_key = Unicode(None, allow_none=True,
                         help="PEM client key (mTLS); default $KSERVE_MESH_CLIENT_KEY").tag(config=True)
    timeout_s = Float(60.0, help="Timeout of one call to the mesh, in seconds").tag(config=True)
    load_timeout_s = Float(120.0, help="How long 'Deploy' waits for a model to load, in seconds").tag(config=True)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._client: MeshClient | None = None
        self._lock = threading.Lock()

    @default("url")
    def _default_url(self) -> str:
        return os.environ.get("KSERVE_MESH_URL", "").strip() or DEFAULT_URL

    def client(self) -> MeshClient:
        """One shared client (httpx's is thread-safe); raises the SDK's typed errors for bad settings."""
        with self._lock:
            if self._client is None:
                url = self.url.strip()
                if "://" not in url:
                    url = "http://" + url
                try:
                    self._client = connect(url, self.token, timeout=self.timeout_s, ca_cert=self.ca_cert,
                                           client_cert=self.client_cert, client_key=self.client_key)
                except MeshClientError as exc:
                    raise MeshUnavailableError(f"the kserve-mesh extension's settings (c.KServeMesh.* or "
                                               f"KSERVE_MESH_*) are wrong: {exc.message}") from exc
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


MeshConfig = KServeMesh
"""The name the handlers use (traitlets names the config section after the class: ``KServeMesh``)."""

"""The composition root: builds one mesh instance from settings and runs its front doors.

- ``mesh_server``: ``MeshServer``, what is started and stopped, in which order;
- ``runtime_setup``: the runtime (in-process, a supervised child, remote) until it is READY;
- ``security``: TLS material, the auth file and the peer token, checked and re-read;
- ``doors``: the gRPC and REST servers on their ports, behind authentication and TLS;
- ``views``: the status document.

Everything started here is stopped here, in reverse order, and a line ``kserve-mesh ready: ...`` on
stdout tells a supervisor (or a test) the bound addresses.
"""

from kserve_mesh.server.doors import advertised_host
from kserve_mesh.server.mesh_server import Endpoints, MeshServer
from kserve_mesh.server.runtime_setup import child_args
from kserve_mesh.server.views import instance_json

__all__ = ["Endpoints", "MeshServer", "advertised_host", "child_args", "instance_json"]

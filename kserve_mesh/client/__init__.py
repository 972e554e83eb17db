"""A light SDK over the mesh's REST API, for the CLI, the notebook widget and the pipeline steps.

    from kserve_mesh.client import connect
    mesh = connect("http://127.0.0.1:8008")     # or https://… with token= / ca_cert= (or KSERVE_MESH_* env)
    mesh.register("iris", "sklearn", "s3://models/iris")
    mesh.wait_until_loaded("iris", timeout=60)
    mesh.infer("iris", numpy_array)          # -> {"output-0": array([...])}

Importing it must not import the server stack (mesh, api, grpc, fastapi, kserve): only httpx,
numpy and the standard library; pandas and pyyaml are imported when used.
"""

from kserve_mesh.client.errors import (
    AuthenticationError,
    CapacityError,
    ConflictError,
    InvalidInputError,
    LoadFailedError,
    LoadTimeoutError,
    MeshClientError,
    MeshUnavailableError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ServerError,
)
from kserve_mesh.client.rest import DEFAULT_URL, MeshClient, connect
from kserve_mesh.client.tensors import example_request

__all__ = [
    "DEFAULT_URL",
    "AuthenticationError",
    "CapacityError",
    "ConflictError",
    "InvalidInputError",
    "LoadFailedError",
    "LoadTimeoutError",
    "MeshClient",
    "MeshClientError",
    "MeshUnavailableError",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "ServerError",
    "connect",
    "example_request",
]

"""Which calls need which role: the gRPC methods and REST routes that are open, need ``infer``,
or need ``admin`` (everything else, including anything unknown)."""

from __future__ import annotations

from kserve_mesh.api.auth.credentials import Role

OPEN_GRPC = frozenset({"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady",
                       "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
ADMIN_GRPC_V2 = frozenset({"/inference.GRPCInferenceService/RepositoryModelLoad",
                           "/inference.GRPCInferenceService/RepositoryModelUnload"})
INFER_GRPC_MESH = frozenset({"/mmesh.ModelMesh/getModelStatus", "/mmesh.ModelMesh/getVModelStatus"})
# Server reflection reveals service names and message shapes, no data: readers may use it.
INFER_GRPC_REFLECTION = frozenset({"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                   "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})
OPEN_REST = frozenset({"/v2/health/live", "/v2/health/ready"})
INFER_REST_POST = frozenset({"/v2/repository/index"})
INFER_SUFFIXES = ("/infer", "/generate", "/generate_stream")  # POST /v2/models/{name}/...: inference
FORWARDED = b"mm-forwarded"  # a hop from a peer: served here, never placed; only peers (admin) send it


def grpc_role(method: str) -> Role | None:
    """The role a gRPC method needs (None: open to anyone)."""
    if method in OPEN_GRPC:
        return None
    if method.startswith("/inference.GRPCInferenceService/"):
        return Role.ADMIN if method in ADMIN_GRPC_V2 else Role.INFER
    if method in INFER_GRPC_MESH or method in INFER_GRPC_REFLECTION:
        return Role.INFER
    return Role.ADMIN  # management, and anything unknown


def rest_role(method: str, path: str) -> Role | None:
    """The role a REST call needs (None: open to anyone)."""
    if method in ("GET", "HEAD"):
        return None if path in OPEN_REST else Role.INFER
    if method == "POST" and (path in INFER_REST_POST or (path.startswith("/v2/models/") and path.endswith(INFER_SUFFIXES))):
        return Role.INFER
    return Role.ADMIN  # management, the peers' forwarding route, and anything unknown

"""Who may call what: bearer tokens and client-certificate identities, each with a role.

Roles: ``infer`` may run inference and read (model metadata and status, listings, the repository
index); ``admin`` may do everything (register, unregister, vmodels, ensureLoaded, repository
load/unload, apply/delete KServe resources). Health (``/v2/health/*``, gRPC ServerLive/ServerReady,
``grpc.health.v1.Health``) stays open so that probes need no secret; gRPC server reflection needs
``infer``.

The auth file (YAML or JSON) names the callers; it is re-read when it changes::

    tokens:                       # HTTP `Authorization: Bearer <token>`, gRPC metadata `authorization`
      - {name: alice, role: admin, token: "<the token>"}
      - {name: dashboards, role: infer, sha256: "<hex SHA-256 of the token>"}   # holds no secret
    identities:                   # verified client certificates (mTLS): CN or a SAN → role
      - {name: mesh-peers, role: admin, subject: "modelmesh-serving.ns"}

Tokens are compared by their SHA-256 digests, and neither a token nor its digest is ever logged:
a refusal logs the caller's address and the reason. A missing or unknown credential is
``Unauthenticated`` (401 / UNAUTHENTICATED); a known caller without the role is
``PermissionDenied`` (403 / PERMISSION_DENIED).

Enforcement wraps the transports from outside: :func:`guard_asgi` in front of the REST app and
:class:`GuardedServer` around gRPC handler registration, so a handler of ours never sees an
unauthenticated call and the per-call cost is one dictionary lookup.

The parts: ``credentials`` (roles, principals, the auth file), ``policy`` (which call needs which
role), ``authenticator`` (the checks and the refusal log), ``asgi_guard`` (REST) and ``grpc_guard``
(gRPC). Import them from here.
"""

from __future__ import annotations

from kserve_mesh.api.auth.asgi_guard import ASGIApp, guard_asgi, tls_identities, with_tls_identity
from kserve_mesh.api.auth.authenticator import Authenticator, bearer, printable
from kserve_mesh.api.auth.credentials import Credentials, Principal, Role, token_digest
from kserve_mesh.api.auth.grpc_guard import GuardedServer
from kserve_mesh.api.auth.policy import (
    ADMIN_GRPC_V2,
    FORWARDED,
    INFER_GRPC_MESH,
    INFER_GRPC_REFLECTION,
    INFER_REST_POST,
    OPEN_GRPC,
    OPEN_REST,
    grpc_role,
    rest_role,
)

__all__ = [
    "ADMIN_GRPC_V2",
    "FORWARDED",
    "INFER_GRPC_MESH",
    "INFER_GRPC_REFLECTION",
    "INFER_REST_POST",
    "OPEN_GRPC",
    "OPEN_REST",
    "ASGIApp",
    "Authenticator",
    "Credentials",
    "GuardedServer",
    "Principal",
    "Role",
    "bearer",
    "grpc_role",
    "guard_asgi",
    "printable",
    "rest_role",
    "tls_identities",
    "token_digest",
    "with_tls_identity",
]

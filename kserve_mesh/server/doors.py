"""The front doors of one instance, started on their ports: gRPC (V2, ModelMesh management,
health, reflection, and any other method naming a model, relayed to its runtime) and REST (V2, management, KServe resources, the peer route), each wrapped in
the instance's authentication and TLS."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import uvicorn

from kserve_mesh.api import grpc_mgmt, grpc_relay, grpc_v2
from kserve_mesh.api.auth import GuardedServer, guard_asgi, with_tls_identity
from kserve_mesh.api.browser_guard import guard_browsers
from kserve_mesh.api.grpc_health import HealthService, add_health_and_reflection
from kserve_mesh.api.http_limits import limited_protocol
from kserve_mesh.core.errors import Unavailable
from kserve_mesh.core.net import is_loopback
from kserve_mesh.mesh.dataplane import DataPlane
from kserve_mesh.mesh.instance import Instance
from kserve_mesh.mesh.management import Management
from kserve_mesh.server.security import Security
from kserve_mesh.settings import MeshSettings

REST_START_TIMEOUT_S = 30.0


async def start_grpc(s: MeshSettings, security: Security, plane: DataPlane, mgmt: Management,
                     instance: Instance) -> tuple[grpc.aio.Server, HealthService, int]:
    """The gRPC server, started: its health service (to start once the instance serves) and port."""
    options = [("grpc.max_send_message_length", s.grpc_max_message_bytes),
               ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
               ("grpc.so_reuseport", 0),
               # a client that never finishes its TLS handshake / HTTP/2 preface is dropped in time
               ("grpc.server_handshake_timeout_ms", int(s.http_header_timeout_s * 1000))]
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=s.grpc_max_concurrent_rpcs)
    services = GuardedServer(server, security.auth) if security.auth is not None else server
    services.add_generic_rpc_handlers((grpc_v2.handler(plane),))
    grpc_mgmt.add_to_server(mgmt, services)
    health = add_health_and_reflection(services, instance)  # grpc.health.v1, reflection
    # last: any other method naming a model goes to its runtime (the server asks handlers in order)
    services.add_generic_rpc_handlers((grpc_relay.RelayHandler(plane),))
    address = f"{s.host}:{s.grpc_port}"
    if security.tls is not None:
        port = server.add_secure_port(address, security.tls.grpc_server_credentials())
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise Unavailable(f"cannot bind the gRPC port {s.host}:{s.grpc_port}")
    await server.start()
    return server, health, port


def guarded_asgi(s: MeshSettings, app: Any, security: Security) -> Any:
    """The REST app behind authentication and the browser guard."""
    if security.auth is not None:
        app = guard_asgi(app, security.auth)
    # Web pages must not drive the mesh through a browser (CSRF, and DNS rebinding of a loopback mesh).
    return guard_browsers(app, check_host=security.auth is None and is_loopback(s.host),
                          extra_hosts=[s.advertise_host, socket.gethostname()])


async def start_rest(s: MeshSettings, asgi: Any, security: Security) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """uvicorn serving ``asgi`` with the body, header and TLS handshake bounds; its task and port."""
    if security.tls is not None:
        # asyncio gives a TLS handshake 60 s; a client must finish it within the header timeout.
        asyncio.constants.SSL_HANDSHAKE_TIMEOUT = s.http_header_timeout_s  # type: ignore[attr-defined]
    config = uvicorn.Config(asgi, host=s.host, port=s.rest_port, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=5,
                            http=limited_protocol(max_body_bytes=s.rest_max_body_bytes,
                                                  header_timeout_s=s.http_header_timeout_s,
                                                  body_timeout_s=s.http_body_timeout_s))
    if security.tls is not None:
        config.load()
        config.ssl = security.tls.server_context()  # always the current certificate (see mesh/tls.py)
        if s.tls_client_auth != "none":
            config.http_protocol_class = with_tls_identity(config.http_protocol_class)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(), name="rest")
    async with asyncio.timeout(REST_START_TIMEOUT_S):
        while not server.started:
            if task.done():
                raise Unavailable(f"cannot serve REST on {s.host}:{s.rest_port}")
            await asyncio.sleep(0.01)
    return server, task, _bound_port(server)


def _bound_port(server: uvicorn.Server) -> int:
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the REST server has no socket")


def advertised_host(bind_host: str, advertise_host: str = "") -> str:
    """The address other instances use for this one: ``advertise_host`` when set, else the bind
    address, except that a wildcard (0.0.0.0, ::, '') becomes this machine's own address (a pod's IP
    on Kubernetes), since a peer connecting to 0.0.0.0 would reach itself."""
    if advertise_host:
        return advertise_host
    if bind_host not in ("0.0.0.0", "::", ""):
        return f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"

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
from kserve_mesh.api.grpc_native import NativeServer
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
                     instance: Instance) -> tuple[grpc.aio.Server | NativeServer, HealthService, int, int]:
    """The gRPC server, started: its health service (to start once the instance serves), its port
    and the port its peers reach it at (the same one unless ``share_ports``: then a port of its own)."""
    if s.grpc_server == "native":
        return await _start_native_grpc(s, security, plane, mgmt, instance)
    options = [("grpc.max_send_message_length", s.grpc_max_message_bytes),
               ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
               # a port is shared only when asked (share_ports): two meshes never share one by mistake
               ("grpc.so_reuseport", 1 if s.share_ports else 0),
               # a client that never finishes its TLS handshake / HTTP/2 preface is dropped in time
               ("grpc.server_handshake_timeout_ms", int(s.http_header_timeout_s * 1000))]
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=s.grpc_max_concurrent_rpcs)
    health = _add_services(server, security, plane, mgmt, instance)
    port = _grpc_port(server, security, s.host, s.grpc_port)
    peer_port = _grpc_port(server, security, s.host, s.peer_grpc_port) if s.share_ports else port
    await server.start()
    return server, health, port, peer_port


def _add_services(server: Any, security: Security, plane: DataPlane, mgmt: Management,
                  instance: Instance) -> HealthService:
    services = GuardedServer(server, security.auth) if security.auth is not None else server
    services.add_registered_method_handlers(grpc_v2.v2.SERVICE, grpc_v2.handlers(plane))
    grpc_mgmt.add_to_server(mgmt, services)
    health = add_health_and_reflection(services, instance)  # grpc.health.v1, reflection
    # last: any other method naming a model goes to its runtime (the server asks handlers in order)
    services.add_generic_rpc_handlers((grpc_relay.RelayHandler(plane),))
    return health


async def _start_native_grpc(s: MeshSettings, security: Security, plane: DataPlane, mgmt: Management,
                             instance: Instance) -> tuple[NativeServer, HealthService, int, int]:
    """The same services on the mesh's own HTTP/2 gRPC server (``api/grpc_native.py``)."""
    server = NativeServer(max_message=s.grpc_max_message_bytes, max_concurrent=s.grpc_max_concurrent_rpcs,
                          handshake_timeout_s=s.http_header_timeout_s, body_timeout_s=s.http_body_timeout_s,
                          ssl_context=security.tls.h2_server_context() if security.tls is not None else None)
    health = _add_services(server, security, plane, mgmt, instance)
    sockets = [listening_socket(s.host, s.grpc_port, reuse_port=s.share_ports, what="gRPC")]
    try:
        if s.share_ports:
            sockets.append(listening_socket(s.host, s.peer_grpc_port, what="gRPC"))
        await server.start(sockets)
    except (OSError, Unavailable) as exc:
        await server.stop(0)
        for sock in sockets:
            sock.close()
        if isinstance(exc, Unavailable):
            raise
        raise Unavailable(f"cannot serve gRPC on {s.host}:{s.grpc_port}: {exc.strerror or exc}") from exc
    ports = server.ports
    return server, health, ports[0], ports[-1]


def _grpc_port(server: grpc.aio.Server, security: Security, host: str, wanted: int) -> int:
    address = f"{host}:{wanted}"
    if security.tls is not None:
        port = server.add_secure_port(address, security.tls.grpc_server_credentials())
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise Unavailable(f"cannot bind the gRPC port {host}:{wanted}")
    return port


def guarded_asgi(s: MeshSettings, app: Any, security: Security) -> Any:
    """The REST app behind authentication and the browser guard."""
    if security.auth is not None:
        app = guard_asgi(app, security.auth)
    # Web pages must not drive the mesh through a browser (CSRF, and DNS rebinding of a loopback mesh).
    return guard_browsers(app, check_host=security.auth is None and is_loopback(s.host),
                          extra_hosts=[s.advertise_host, socket.gethostname()])


async def start_rest(s: MeshSettings, asgi: Any,
                     security: Security) -> tuple[uvicorn.Server, asyncio.Task[None], int, int]:
    """uvicorn serving ``asgi`` with the body, header and TLS handshake bounds; its task, its port
    and the port its peers reach it at (with ``share_ports``: the shared port is bound with
    SO_REUSEPORT, and a port of its own serves the same app to its peers)."""
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
    sockets = None
    if s.share_ports:
        sockets = [listening_socket(s.host, s.rest_port, reuse_port=True),
                   listening_socket(s.host, s.peer_rest_port)]
    task = asyncio.create_task(server.serve(sockets=sockets), name="rest")
    async with asyncio.timeout(REST_START_TIMEOUT_S):
        while not server.started:
            if task.done():
                raise Unavailable(f"cannot serve REST on {s.host}:{s.rest_port}")
            await asyncio.sleep(0.01)
    ports = _bound_ports(server)
    return server, task, ports[0], ports[-1]


def listening_socket(host: str, port: int, *, reuse_port: bool = False, what: str = "REST") -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6), with SO_REUSEPORT when ``reuse_port``:
    every process of the same user that binds the port so shares it, the kernel spreading new
    connections between them."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot bind the {what} port {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _bound_ports(server: uvicorn.Server) -> list[int]:
    """The ports the REST server listens on, in the order of its sockets."""
    ports = [int(sock.getsockname()[1]) for srv in server.servers for sock in srv.sockets]
    if not ports:
        raise RuntimeError("the REST server has no socket")
    return ports


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

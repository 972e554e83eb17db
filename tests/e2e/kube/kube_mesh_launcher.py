"""Start ``kserve-mesh up`` with the KServe routes mounted, as server.py will once it is wired.

Usage: ``python kube_mesh_launcher.py up --rest-port 0 ...`` (the arguments of ``kserve-mesh``).
It wraps ``MeshServer.start``: the app gets ``api.rest_kube.router`` of a ``KubeService`` over the
server's instance and store; once the ports are bound the service learns its endpoints and
re-reconciles what the store holds. If server.py already mounts the routes, ours come first and
answer the same way.
"""

from __future__ import annotations

import sys

import kserve_mesh.server as srv
from kserve_mesh.api.rest_kube import router
from kserve_mesh.kube.standalone import KubeService
from kserve_mesh.store.keys import Keys

_orig_start = srv.MeshServer.start
_orig_build_app = srv.build_app


async def _start(self):  # type: ignore[no-untyped-def]
    services: list[KubeService] = []

    def build_app(instance, version, **kw):  # type: ignore[no-untyped-def]
        service = KubeService.for_instance(instance, self.store, Keys.for_namespace(self.settings.namespace),
                                           self.clock)
        services.append(service)
        kw["routers"] = [router(service), *kw.get("routers", ())]
        return _orig_build_app(instance, version, **kw)

    srv.build_app = build_app
    try:
        endpoints = await _orig_start(self)
    finally:
        srv.build_app = _orig_build_app
    for service in services:
        service.set_endpoints(grpc=endpoints.grpc, rest=endpoints.rest)
        await service.resync()
    return endpoints


srv.MeshServer.start = _start  # type: ignore[method-assign]

if __name__ == "__main__":
    from kserve_mesh.cli import main

    sys.argv = ["kserve-mesh", *sys.argv[1:]]
    main()

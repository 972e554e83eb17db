"""An in-memory Kubernetes API (kmock's KubernetesEmulator) on 127.0.0.1, as a process of its own.

No real kube-apiserver runs on these machines (FACTS.md); kmock is the most real one that does. It
needs every resource declared (namespaces, events, and the KServe CRDs: a real cluster would have
them from the CRD objects). It prints ``kmock ready: <url>`` once it serves, and exits on SIGTERM.

kmock 0.8 reads ``/api/v1/namespaces[/NAME]`` as "objects inside a namespace" and fails on it, so
Namespace objects could not be created, listed or read; :func:`_parse_path` fixes that one case.
Its discovery names the core group's version ``/v1``, which kubectl cannot use: ``v1`` here.
It also stores objects without ``metadata.uid`` / ``resourceVersion``, which kopf's JSON patches
test; :class:`Emulator` stamps them on create and bumps the version on every patch, as the real
API server does, and answers a JSON patch whose test fails with 422 (kmock: 500).

    python controller_kmock_server.py [--port 0] [--prometheus-operator] [--all-kinds]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import signal
import sys
import uuid
from typing import Any

import jsonpatch
import kmock
from kmock._internal import parsing

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """``/api/v1/namespaces[/NAME[/status]]`` is the Namespace resource itself."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 5 and (len(parts) < 5 or parts[4] == "status"):
        return parsing.ParsedPath(group="", version="v1", plural="namespaces",
                                  name=parts[3] if len(parts) > 3 else None,
                                  subresource=parts[4] if len(parts) > 4 else None)
    return _original_parse_path(path)


parsing.parse_path = _parse_path


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with server-set metadata (generated names, uid, creationTimestamp,
    resourceVersion) and watches that resume from a list's resourceVersion instead of replaying
    every object, and that lose no change made while they start."""

    _versions = itertools.count(1)
    _last_version = 0

    def _next_version(self) -> str:
        self._last_version = next(self._versions)
        return str(self._last_version)

    async def _serve_list(self, request: Any) -> Any:
        version = str(self._last_version)
        listing = await super()._serve_list(request)
        listing["metadata"]["resourceVersion"] = version
        # As the API server: a list names its kind (kubectl's decoder needs it; kopf does not).
        info = self.resources.get(request.resource) if request.resource is not None else None
        if info is not None and getattr(info, "kind", None):
            group = request.resource.group
            listing.setdefault("kind", f"{info.kind}List")
            listing.setdefault("apiVersion", f"{group}/{request.resource.version}" if group
                               else request.resource.version)
        return listing

    async def _serve_watch(self, request: Any) -> Any:
        since = request.params.get("resourceVersion", "")
        # As the API server does: the objects stored after ``since`` (all of them without one: ADDED),
        # then every change. The bus is marked under the same lock as the objects are read (every
        # change is stored and put on the bus under that lock), so a change made while the first
        # events are sent is streamed too: kmock's own watch marked the bus only after sending them
        # and lost what was created in between (a controller that had just started never saw it).
        yield b""
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            objs = [o for o in self._KubernetesEmulator__get_objs(request, strict=False) if not o.deleted]
            if since.isdigit():
                first = [{"type": "MODIFIED", "object": o.raw} for o in objs
                         if int(o.raw.get("metadata", {}).get("resourceVersion", "0")) > int(since)]
            else:
                first = [{"type": "ADDED", "object": o.raw} for o in objs]
        try:
            for event in first:
                yield event
            async for event in bus.stream(since=marker):
                meta = event.get("object", {}).get("metadata", {})
                if request.namespace in (None, meta.get("namespace")) and request.name in (None, meta.get("name")):
                    yield event
        finally:
            await bus.unmark(marker)

    async def _serve_version(self, request: Any) -> Any:
        # kmock names the core group's version "/v1"; the API server (and kubectl) say "v1".
        listing = await super()._serve_version(request)
        listing["groupVersion"] = listing["groupVersion"].lstrip("/")
        return listing

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["resourceVersion"] = self._next_version()
            meta.setdefault("generation", 1)
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            version = self._next_version()
            if isinstance(data, list):
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            elif isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
            # The API server answers 422 when a JSON patch's test fails (kopf retries on its next cycle).
            return await self._render_error(kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)))

# plural resource key -> (kind, namespaced, subresources)
RESOURCES: dict[str, tuple[str, bool, set[str]]] = {
    "v1/namespaces": ("Namespace", False, set()),
    "v1/events": ("Event", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/secrets": ("Secret", True, set()),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True, set()),
    "v1/services": ("Service", True, set()),
    "apps/v1/deployments": ("Deployment", True, {"status", "scale"}),
    "events.k8s.io/v1/events": ("Event", True, set()),
    "coordination.k8s.io/v1/leases": ("Lease", True, set()),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, {"status"}),
    "serving.kserve.io/v1beta1/inferenceservices": ("InferenceService", True, {"status"}),
    "serving.kserve.io/v1alpha1/servingruntimes": ("ServingRuntime", True, {"status"}),
    "serving.kserve.io/v1alpha1/clusterservingruntimes": ("ClusterServingRuntime", False, {"status"}),
    "serving.kserve.io/v1alpha1/predictors": ("Predictor", True, {"status"}),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
# Served only with --prometheus-operator (a cluster where the Prometheus operator is installed).
PROMETHEUS_OPERATOR = {
    "monitoring.coreos.com/v1/servicemonitors": ("ServiceMonitor", True, set()),
    "monitoring.coreos.com/v1/prometheusrules": ("PrometheusRule", True, set()),
}


# Served only with --all-kinds: every kind the quickstart applies (scripts/quickstart.sh's test).
ALL_KINDS = {
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, {"status"}),
    "apps/v1/statefulsets": ("StatefulSet", True, {"status", "scale"}),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True, set()),
    "v1/serviceaccounts": ("ServiceAccount", True, set()),
    "v1/pods": ("Pod", True, {"status"}),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True, set()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True, set()),
}


async def serve(port: int, prometheus_operator: bool = False, all_kinds: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator() as emulator, kmock.Server(emulator, port=port or None) as server:
        resources = {**RESOURCES, **(PROMETHEUS_OPERATOR if prometheus_operator else {}),
                     **(ALL_KINDS if all_kinds else {})}
        for key, (kind, namespaced, subresources) in resources.items():
            emulator.resources[key] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS, subresources=subresources)
        print(f"kmock ready: {str(server.url).rstrip('/')}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--prometheus-operator", action="store_true", help="serve monitoring.coreos.com/v1 too")
    parser.add_argument("--all-kinds", action="store_true", help="serve every kind the quickstart applies")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.prometheus_operator, args.all_kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The few Kubernetes API calls the controller makes beyond kopf's own (Deployments, Services,
ConfigMaps, Secrets, PVCs, Events, the leader Lease, HPAs, ServiceMonitors), on the credentials kopf logged in with.

kopf watches and patches the resources it handles with its own aiohttp client; it has no public
client for other objects. ``KubeHttp`` is a small aiohttp client built from the same
``kopf.ConnectionInfo`` (server, CA, token or client certificate), so one login serves both and no
second Kubernetes library is needed (the sync ``kubernetes`` client's watch does not work against
kmock, FACTS.md). ``KubeApi`` is the port the rest of the controller uses; tests use a fake.

Every call has a deadline; API errors come back as ``KubeApiError`` with the status and the API
server's message (404 on ``get`` is ``None``).

``Warnings`` posts Warning Events about objects the controller does not get from kopf (the
ConfigMap, a Secret) and logs them, once per distinct problem.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import kopf

from kserve_mesh.core.errors import MeshError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 15.0
COMPONENT = "kserve-mesh-controller"


class KubeApiError(MeshError):
    """The Kubernetes API refused or failed a call."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API error {status}: {message}")
        self.status = status


class KubeApi(Protocol):
    """Plain JSON in and out; ``path`` is an API path such as ``/apis/apps/v1/namespaces/x/deployments``."""

    async def get(self, path: str) -> dict[str, Any] | None: ...

    async def list(self, path: str) -> list[dict[str, Any]]: ...

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def delete(self, path: str) -> None: ...


# -- paths ---------------------------------------------------------------------------------------

def deployments_path(namespace: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments" + (f"/{name}" if name else "")


def services_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/services" + (f"/{name}" if name else "")


def configmap_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps/{name}"


def secrets_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


def pvc_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"


def hpa_path(namespace: str, name: str = "") -> str:
    return f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers" + (f"/{name}" if name else "")


def service_monitor_path(namespace: str, name: str = "") -> str:
    return f"/apis/monitoring.coreos.com/v1/namespaces/{namespace}/servicemonitors" + (f"/{name}" if name else "")


def lease_path(namespace: str, name: str = "") -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases" + (f"/{name}" if name else "")


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def object_ref(kind: str, namespace: str, name: str, *, api_version: str = "v1", uid: str = "") -> dict[str, str]:
    """An Event's ``involvedObject`` (the object need not exist: a missing Secret is named too)."""
    ref = {"apiVersion": api_version, "kind": kind, "namespace": namespace, "name": name}
    if uid:
        ref["uid"] = uid
    return ref


class Warnings:
    """Warning Events (and log lines) about objects outside kopf's handlers, once per problem.

    ``warn(key, ...)`` posts unless ``key`` already carries the same reason and message; ``clear``
    forgets a key (the problem is gone, so its return is news again). Posting is best effort: an API
    error is logged, never raised (the problem itself is logged either way)."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._posted: dict[str, tuple[str, str]] = {}

    async def warn(self, key: str, involved: Mapping[str, str], reason: str, message: str) -> bool:
        if self._posted.get(key) == (reason, message):
            return False
        self._posted[key] = (reason, message)
        namespace = involved["namespace"]
        log.warning("%s %s/%s: %s: %s", involved["kind"], namespace, involved["name"], reason, message)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": dict(involved), "reason": reason, "message": message[:1024], "type": "Warning",
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.kube.create(events_path(namespace), body)
        except MeshError as exc:
            log.warning("Event %s on %s %s/%s not posted: %s", reason, involved["kind"], namespace,
                        involved["name"], exc)
        return True

    def clear(self, key: str) -> None:
        self._posted.pop(key, None)

    def clear_prefix(self, prefix: str) -> None:
        for key in [k for k in self._posted if k.startswith(prefix)]:
            del self._posted[key]


# -- the aiohttp adapter -------------------------------------------------------------------------

class KubeHttp:
    """``KubeApi`` over aiohttp with the credentials of a ``kopf.ConnectionInfo``."""

    def __init__(self, info: kopf.ConnectionInfo, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.server = info.server.rstrip("/")
        self._tmp = tempfile.TemporaryDirectory(prefix="kserve-mesh-kube-")
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        ssl_context: ssl.SSLContext | bool = True
        if self.server.startswith("https"):
            ssl_context = self._ssl(info)
        self._session = aiohttp.ClientSession(
            headers=headers, auth=auth, timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(ssl=ssl_context))

    def _file(self, name: str, data: str | bytes) -> str:
        raw = data if isinstance(data, bytes) else data.encode()
        try:  # kubeconfig *-data fields are base64; kopf may have decoded them already
            raw = base64.b64decode(raw, validate=True)
        except ValueError:
            pass
        path = Path(self._tmp.name) / name
        path.write_bytes(raw)
        return str(path)

    def _ssl(self, info: kopf.ConnectionInfo) -> ssl.SSLContext:
        if info.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            cafile = info.ca_path or (self._file("ca.crt", info.ca_data) if info.ca_data else None)
            ctx = ssl.create_default_context(cafile=cafile)
        cert = info.certificate_path or (self._file("tls.crt", info.certificate_data)
                                         if info.certificate_data else None)
        key = info.private_key_path or (self._file("tls.key", info.private_key_data)
                                        if info.private_key_data else None)
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    async def close(self) -> None:
        await self._session.close()
        self._tmp.cleanup()

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/json") -> dict[str, Any] | None:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with self._session.request(method, self.server + path, data=data, headers=headers) as resp:
                text = await resp.text()
                if resp.status == 404 and method == "GET":
                    return None
                if resp.status >= 400:
                    raise KubeApiError(resp.status, _message(text))
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(0, f"{method} {path}: {exc or type(exc).__name__}") from exc

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._call("GET", path)

    async def list(self, path: str) -> list[dict[str, Any]]:
        doc = await self._call("GET", path)
        return list((doc or {}).get("items") or [])

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, dict(body)) or {}

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", path, dict(body), "application/merge-patch+json") or {}

    async def json_patch(self, path: str, ops: list[Mapping[str, Any]]) -> dict[str, Any]:
        """A JSON patch (RFC 6902); a failing ``test`` op is the API server's 409/422."""
        return await self._call("PATCH", path, [dict(op) for op in ops], "application/json-patch+json") or {}

    async def delete(self, path: str) -> None:
        try:
            await self._call("DELETE", path)
        except KubeApiError as exc:
            if exc.status != 404:
                raise


def _message(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:300]
    return str(doc.get("message") or doc.get("reason") or text[:300]) if isinstance(doc, dict) else text[:300]

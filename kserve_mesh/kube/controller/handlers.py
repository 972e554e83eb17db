"""The kopf handlers of the controller, registered on a registry of their own (no module globals).

What is watched:

- InferenceServices annotated ``serving.kserve.io/deploymentMode: ModelMesh`` (kopf's annotation
  filter: any other InferenceService is never touched: no finalizer, no annotation, no status) and
  ModelMesh Predictors: create / update / resume -> reconcile now; a timer re-reconciles every
  ``status_interval_s`` while the model is not settled (so Loading -> Loaded shows up) and every
  ``settled_interval_s`` after; delete -> the vmodel goes (kopf holds a finalizer until it has).
  Resources of namespaces that are not served are filtered out before kopf touches them (``when``):
  no finalizer, annotation or status. When a namespace gets the label, its model resources are
  touched (an annotation) so that kopf, which re-checks filters only on changes, picks them up.
- ServingRuntimes and ClusterServingRuntimes, and in cluster scope Namespaces: kopf indexes (kept
  current by watches, complete before any model handler runs). A runtime change pokes the
  Deployment sync.

In cluster scope only namespaces labelled ``modelmesh-enabled=true`` are served; in namespace scope
the one namespace is, and cluster-scoped resources are not watched at all (the namespaced RBAC of
that mode cannot read them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf

from kserve_mesh.core.clock import Clock, SystemClock
from kserve_mesh.core.errors import DeadlineExceeded, MeshError, Unavailable
from kserve_mesh.kube.controller.deploy.autoscaling import AUTOSCALER_CLASS
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import service_urls
from kserve_mesh.kube.controller.kube_api import KubeApi, KubeHttp, Warnings
from kserve_mesh.kube.controller.mesh_client import GrpcMesh
from kserve_mesh.kube.controller.model_reconcile import ModelReconcile
from kserve_mesh.kube.controller.namespace_secrets import NamespaceSecrets
from kserve_mesh.kube.controller.runtime_sync import ConfigSource, RuntimeSync
from kserve_mesh.kube.controller.settings import ControllerSettings
from kserve_mesh.kube.core.errors import InvalidSpec
from kserve_mesh.kube.core.parse import parse
from kserve_mesh.kube.core.resources import DEPLOYMENT_MODE_ANNOTATION, MODELMESH_MODE, ServingRuntime
from kserve_mesh.kube.core.status import ServiceEndpoints

log = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
ENABLED_LABEL = "modelmesh-enabled"
FINALIZER = "kserve-mesh.kserve.io/finalizer"
KOPF_PREFIX = "kserve-mesh.kserve.io"
NAMESPACE_ENABLED_AT = f"{KOPF_PREFIX}/namespace-enabled-at"
MODELMESH_ONLY = {DEPLOYMENT_MODE_ANNOTATION: MODELMESH_MODE}
# kind -> (version, plural, annotation filter)
MODEL_KINDS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "InferenceService": ("v1beta1", "inferenceservices", MODELMESH_ONLY),
    "Predictor": ("v1alpha1", "predictors", None),
}


class Controller:
    """What the handlers share: settings, clients (made after kopf logs in), the sync, locks."""

    def __init__(self, settings: ControllerSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.connection: kopf.ConnectionInfo | None = None
        self._kube: KubeHttp | None = None
        self._kube_for: kopf.ConnectionInfo | None = None
        self._stale: list[KubeHttp] = []
        self._meshes: dict[tuple[str, str], GrpcMesh] = {}  # (address, namespace) -> client
        self._stale_meshes: list[GrpcMesh] = []
        self._locks: defaultdict[tuple[str, str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._checked_at: dict[tuple[str, str, str], float] = {}
        self._settled: dict[tuple[str, str, str], bool] = {}
        self._warned: dict[tuple[str, str, str], tuple[str, str] | None] = {}
        self._autoscaler_warned: set[tuple[str, str, str]] = set()
        self.indices: dict[str, Any] = {}
        self.served_namespaces: dict[str, bool] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.warnings = Warnings(self)
        self.secrets = NamespaceSecrets(self, self.warnings)
        self.config = ConfigSource(self, settings.controller_namespace, settings.config_map,
                                   image=settings.instance_image, warnings=self.warnings)
        self.sync = RuntimeSync(self, self.config, self.runtime_docs, interval_s=settings.sync_interval_s,
                                secrets=self.secrets)
        self.models = ModelReconcile(self.clock, self.endpoints_for)
        self._serving_config = ServingConfig()

    # -- KubeApi, delegated to a client on kopf's current credentials ----------------------------
    def _client(self) -> KubeApi:
        if self.connection is None:
            raise Unavailable("not logged in to the Kubernetes API yet")
        if self._kube is None or self._kube_for is not self.connection:
            if self._kube is not None:
                self._stale.append(self._kube)  # closed at shutdown: calls may still be using it
            self._kube = KubeHttp(self.connection)
            self._kube_for = self.connection
        return self._kube

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._client().get(path)

    async def list(self, path: str) -> list[dict[str, Any]]:
        return await self._client().list(path)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._client().create(path, body)

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._client().patch(path, body)

    async def delete(self, path: str) -> None:
        await self._client().delete(path)

    # -- the mesh of a namespace -----------------------------------------------------------------
    async def mesh_for(self, namespace: str) -> GrpcMesh:
        """The management client of ``namespace``'s mesh, with the credentials its Secrets hold now
        (a rotated token or certificate gives a new client; the old one closes at shutdown)."""
        config = self._serving_config
        address = self.settings.mesh_address_for(namespace, config.service_name, config.grpc_port)
        credentials = await self.secrets.credentials(config, namespace)
        mesh = self._meshes.get((address, namespace))
        if mesh is None or mesh.credentials != credentials:
            if mesh is not None:
                self._stale_meshes.append(mesh)  # a call may still be using it
            mesh = self._meshes[(address, namespace)] = GrpcMesh(
                address, deadline_s=self.settings.mesh_deadline_s, credentials=credentials)
        return mesh

    def endpoints_for(self, namespace: str) -> ServiceEndpoints:
        urls = service_urls(self._serving_config, namespace, "")
        return ServiceEndpoints(grpc=urls["grpcUrl"].removeprefix("grpc://"), rest=urls["restUrl"])

    def start_background(self) -> None:
        """Start the tasks the controller owns next to kopf (the Deployment sync)."""
        self._tasks.append(asyncio.create_task(self.sync.run(), name="runtime-deployment-sync"))

    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def close(self) -> None:
        await self.stop_background()
        for mesh in [*self._meshes.values(), *self._stale_meshes]:
            await mesh.close()
        self._meshes.clear()
        self._stale_meshes.clear()
        for client in [*self._stale, *([self._kube] if self._kube else [])]:
            await client.close()
        self._stale.clear()
        self._kube = None

    # -- runtimes and namespaces, from kopf's indexes --------------------------------------------
    def remember(self, kwargs: Mapping[str, Any]) -> None:
        for key in ("servingruntimes_index", "clusterservingruntimes_index", "namespaces_index"):
            if key in kwargs:
                self.indices[key] = kwargs[key]

    def runtime_docs(self, namespace: str) -> dict[str, Mapping[str, Any]]:
        """Raw runtime documents usable in ``namespace``, by name (a namespaced one wins)."""
        docs: dict[str, Mapping[str, Any]] = {}
        for doc in self.indices.get("clusterservingruntimes_index", {}).get("", []):
            docs[doc["metadata"]["name"]] = doc
        for doc in self.indices.get("servingruntimes_index", {}).get(namespace, []):
            docs[doc["metadata"]["name"]] = doc
        return docs

    def runtimes_for(self, namespace: str) -> list[ServingRuntime]:
        out: list[ServingRuntime] = []
        for name, doc in self.runtime_docs(namespace).items():
            try:
                parsed = parse(dict(doc), default_namespace=namespace)
            except InvalidSpec as exc:
                log.warning("%s %s ignored: %s", doc.get("kind"), name, exc)
                continue
            assert isinstance(parsed, ServingRuntime)
            out.append(parsed)
        return out

    def when_enabled(self, namespace: str | None = None, **kwargs: Any) -> bool:
        """kopf filter: the resource's namespace is served (handlers of other ones never run, so
        kopf adds no finalizer or annotation to them)."""
        self.remember(kwargs)
        return self.enabled(namespace or "default")

    def enabled(self, namespace: str) -> bool:
        if self.settings.namespace_scope:
            return namespace == self.settings.namespace
        return any(self.indices.get("namespaces_index", {}).get(namespace, []))

    async def wake_namespace(self, namespace: str) -> None:
        """A namespace became served: touch its model resources so kopf hands them to the handlers
        (its filters kept them out until now, and kopf re-checks filters only on a change)."""
        stamp = str(self.clock.now_ms())
        for kind, (version, plural, only) in MODEL_KINDS.items():
            path = f"/apis/{GROUP}/{version}/namespaces/{namespace}/{plural}"
            try:
                items = await self.list(path)
            except MeshError as exc:
                log.warning("namespace %s: %s not listed: %s", namespace, plural, exc)
                continue
            for item in items:
                annotations = (item.get("metadata") or {}).get("annotations") or {}
                if only and any(annotations.get(k) != v for k, v in only.items()):
                    continue
                name = item["metadata"]["name"]
                log.info("namespace %s is served now: picking up %s %s", namespace, kind, name)
                await self.patch(f"{path}/{name}", {"metadata": {"annotations": {NAMESPACE_ENABLED_AT: stamp}}})

    # -- model resources -------------------------------------------------------------------------
    async def reconcile_model(self, body: kopf.Body, patch: kopf.Patch, *, timer: bool = False) -> None:
        kind, namespace, name = body["kind"], body.metadata.namespace or "default", body.metadata.name
        key = (kind, namespace, name)
        if not self.enabled(namespace):
            return
        loop = asyncio.get_running_loop()
        if timer and self._settled.get(key) and \
                loop.time() - self._checked_at.get(key, float("-inf")) < self.settings.settled_interval_s:
            return
        self._serving_config = await self.config()
        mesh = await self.mesh_for(namespace)
        async with self._locks[key]:
            result = await self.models.reconcile(mesh, _raw(body), self.runtimes_for(namespace), observe=timer)
        self._checked_at[key] = loop.time()
        self._settled[key] = result.settled
        if result.patch:
            patch.status.update(result.patch)
        # The status in ``body`` may predate a patch still in flight (a handler and the timer can
        # both see the old one): remember what was posted, so a failure gives one Event.
        if result.warning is not None and self._warned.get(key) != result.warning:
            kopf.warn(body, reason=result.warning[0], message=result.warning[1])
        if result.warning is not None:
            self._warned[key] = result.warning
        elif result.settled:  # recovered: the same failure later is news again
            self._warned.pop(key, None)
        if self.settings.manage_deployments:
            self.sync.use(namespace, f"{kind}/{name}", result.runtime, result.claim)
        self._autoscaler_on_model(body, key, result.runtime)

    def _autoscaler_on_model(self, body: kopf.Body, key: tuple[str, str, str], runtime: str | None) -> None:
        """KServe's autoscaler annotations on a ModelMesh model do nothing by themselves (its pods are
        its runtime's, shared): say so once, naming the runtime to annotate instead."""
        annotations = body.metadata.annotations or {}
        if AUTOSCALER_CLASS not in annotations or key in self._autoscaler_warned:
            return
        self._autoscaler_warned.add(key)
        where = f"ServingRuntime {runtime}" if runtime else "its ServingRuntime"
        kopf.warn(body, reason="AutoscalerOnModel", message=(
            f"{AUTOSCALER_CLASS} on a ModelMesh {body['kind']} has no effect: the runtime pods serve every model "
            f"that uses the runtime; annotate {where} instead (the controller then keeps an HPA for its pods)"))

    async def remove_model(self, body: kopf.Body) -> None:
        kind, namespace, name = body["kind"], body.metadata.namespace or "default", body.metadata.name
        key = (kind, namespace, name)
        if self.enabled(namespace):
            mesh = await self.mesh_for(namespace)
            async with self._locks[key]:
                try:
                    await self.models.remove(mesh, kind, name)
                except (Unavailable, DeadlineExceeded) as exc:
                    raise kopf.TemporaryError(f"vmodel {name} not deleted yet: {exc}", delay=5) from exc
        self._locks.pop(key, None)
        self._checked_at.pop(key, None)
        self._settled.pop(key, None)
        self._warned.pop(key, None)
        self._autoscaler_warned.discard(key)
        if self.settings.manage_deployments:
            self.sync.drop(namespace, f"{kind}/{name}")


def _raw(body: kopf.Body) -> dict[str, Any]:
    """The plain document behind a kopf Body."""
    return {key: body[key] for key in body}


def login(controller_settings: ControllerSettings, /, **kwargs: Any) -> kopf.ConnectionInfo:
    """Credentials: the in-cluster service account (unless a kubeconfig was named), else the
    kubeconfig. ``kwargs`` are kopf's login arguments (its ``settings`` at least)."""
    info = None
    if controller_settings.kubeconfig is None:
        info = kopf.login_with_service_account(**kwargs)
    info = info or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: not in a cluster, and no kubeconfig "
                              "(--kubeconfig or KUBECONFIG)")
    return info


def build_registry(ctl: Controller) -> kopf.OperatorRegistry:
    """A kopf registry with every handler of the controller bound to ``ctl``."""
    registry = kopf.OperatorRegistry()
    settings = ctl.settings

    # Explicit ids: kopf names handlers (and the index kwargs) after their qualified names otherwise.
    @kopf.on.login(id="login", registry=registry)
    def login_handler(**kwargs: Any) -> kopf.ConnectionInfo | None:
        ctl.connection = login(settings, **kwargs)
        return ctl.connection

    # Our own tasks live inside kopf's lifetime: kopf waits for any task still running when it
    # stops ("hung tasks"), so they start with the operator and stop with its cleanup.
    @kopf.on.startup(id="start-sync", registry=registry)
    async def start(**_: Any) -> None:
        ctl.start_background()

    @kopf.on.cleanup(id="stop-sync", registry=registry)
    async def stop(**_: Any) -> None:
        await ctl.close()

    @kopf.index(GROUP, "v1alpha1", "servingruntimes", id="servingruntimes_index", registry=registry)
    def servingruntimes_index(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
        ctl.sync.poke(namespace)
        return {namespace: _raw(body)}

    if not settings.namespace_scope:
        @kopf.index(GROUP, "v1alpha1", "clusterservingruntimes", id="clusterservingruntimes_index",
                    registry=registry)
        def clusterservingruntimes_index(body: kopf.Body, **_: Any) -> dict[str, Any]:
            ctl.sync.poke()
            return {"": _raw(body)}

        @kopf.index("", "v1", "namespaces", id="namespaces_index", registry=registry)
        def namespaces_index(name: str, labels: Mapping[str, str], **_: Any) -> dict[str, bool]:
            return {name: labels.get(ENABLED_LABEL) == "true"}

        # An event handler, not a change handler: kopf keeps no state (annotations) on Namespaces.
        @kopf.on.event("", "v1", "namespaces", id="namespace-enabled", registry=registry)
        async def namespace_enabled(name: str, labels: Mapping[str, str], type: str | None, **_: Any) -> None:
            now = labels.get(ENABLED_LABEL) == "true" and type != "DELETED"
            was = ctl.served_namespaces.get(name)
            ctl.served_namespaces[name] = now
            if now and was is False:
                await ctl.wake_namespace(name)

    for version, plural, only in MODEL_KINDS.values():
        _model_handlers(registry, ctl, version, plural, only)
    return registry


def _model_handlers(registry: kopf.OperatorRegistry, ctl: Controller, version: str, plural: str,
                    annotations: dict[str, str] | None) -> None:
    settings = ctl.settings

    @kopf.on.resume(GROUP, version, plural, id="reconcile", annotations=annotations,
                    when=ctl.when_enabled, registry=registry)
    @kopf.on.create(GROUP, version, plural, id="reconcile", annotations=annotations,
                    when=ctl.when_enabled, registry=registry)
    @kopf.on.update(GROUP, version, plural, id="reconcile", annotations=annotations,
                    when=ctl.when_enabled, registry=registry)
    async def changed(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        ctl.remember(kwargs)
        await ctl.reconcile_model(body, patch)

    @kopf.timer(GROUP, version, plural, id="refresh-status", annotations=annotations,
                interval=settings.status_interval_s, initial_delay=settings.status_interval_s,
                when=ctl.when_enabled, registry=registry)
    async def refresh(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        ctl.remember(kwargs)
        await ctl.reconcile_model(body, patch, timer=True)

    @kopf.on.delete(GROUP, version, plural, id="delete-vmodel", annotations=annotations, retries=60,
                    when=ctl.when_enabled, registry=registry)
    async def deleted(body: kopf.Body, **kwargs: Any) -> None:
        ctl.remember(kwargs)
        await ctl.remove_model(body)

    del changed, refresh, deleted


def operator_settings() -> kopf.OperatorSettings:
    """kopf settings: no cluster scanning (kmock and least-privilege RBAC both want that), our own
    finalizer and annotation prefix, handler logs not posted as Events (only our warnings are)."""
    s = kopf.OperatorSettings()
    s.scanning.disabled = True
    s.posting.level = logging.WARNING
    s.persistence.finalizer = FINALIZER
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX,
                                                                     key="last-handled-configuration")
    s.watching.server_timeout = 300
    s.networking.request_timeout = 30
    return s

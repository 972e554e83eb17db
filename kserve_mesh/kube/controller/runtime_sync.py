"""Keeps each namespace's runtime Deployments and Service in line with the runtimes its models use.

Model handlers tell ``RuntimeSync`` which runtime each InferenceService / Predictor resolved to
(``use`` / ``drop``) and poke the namespace; one owned background task syncs poked namespaces at
once and every namespace it knows periodically (that pass is what scales an unused runtime to zero
after its grace period). A sync reads the ConfigMap, the runtimes (from kopf's indexes, handed in
as a callable) and our Deployments, checks what the pods depend on (the auth Secret, made when
absent; the TLS Secret; the PVC claims: ``namespace_secrets.NamespaceSecrets``), plans with
``deploy.plan.plan_namespace`` and applies the plan. A missing or unusable Secret becomes a Warning
Event and leaves the namespace's Deployments as they are: no pod is made that could not start.

Usage lives in memory: a restarted controller rebuilds it from kopf's resume handlers, which run
for every existing resource before the first sync of their namespace matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from kserve_mesh.core.errors import MeshError
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.monitoring import (
    MONITORING_API,
    SERVICE_MONITOR_NAME,
    is_ours,
    monitor_differs,
    serves_service_monitors,
    service_monitor,
)
from kserve_mesh.kube.controller.deploy.plan import (
    HPA,
    Action,
    Create,
    Patch,
    Warn,
    managed_deployments,
    managed_hpas,
    plan_namespace,
)
from kserve_mesh.kube.controller.deploy.security import PodInputs, SecretProblem
from kserve_mesh.kube.controller.kube_api import (
    KubeApi,
    Warnings,
    configmap_path,
    deployments_path,
    hpa_path,
    object_ref,
    service_monitor_path,
    services_path,
)
from kserve_mesh.kube.controller.namespace_secrets import NamespaceSecrets

log = logging.getLogger(__name__)

RuntimeDocs = Callable[[str], Mapping[str, Mapping[str, Any]]]


class RuntimeSync:
    def __init__(self, kube: KubeApi, config_source: Callable[[], Awaitable[ServingConfig]],
                 runtime_docs: RuntimeDocs, *,
                 interval_s: float = 10.0, wall_clock: Callable[[], float] = time.time,
                 secrets: NamespaceSecrets | None = None) -> None:
        self.kube = kube
        self._config_source = config_source
        self._runtime_docs = runtime_docs
        self.interval_s = interval_s
        self._now = wall_clock
        self.secrets = secrets or NamespaceSecrets(kube, Warnings(kube))
        # namespace -> resource key -> (runtime, the PVC claim its model is read from)
        self._usage: dict[str, dict[str, tuple[str, str | None]]] = defaultdict(dict)
        self._known: set[str] = set()
        self._poked: set[str] = set()
        self._warned: dict[str, set[str]] = {}
        self._monitoring = False
        self._monitoring_checked_at = float("-inf")
        self.monitoring_ttl_s = 60.0
        """How often the Prometheus operator's API is looked for (it may be installed later)."""
        self._wake = asyncio.Event()

    # -- what the model handlers report ----------------------------------------------------------
    def use(self, namespace: str, resource: str, runtime: str | None, claim: str | None = None) -> None:
        """``resource`` (``kind/name``) in ``namespace`` uses ``runtime`` (None: none right now), its
        model read from PVC ``claim`` (None: not from a PVC)."""
        before = self._usage[namespace].get(resource)
        now = None if runtime is None else (runtime, claim)
        if now is None:
            self._usage[namespace].pop(resource, None)
        else:
            self._usage[namespace][resource] = now
        if before != now:
            self.poke(namespace)

    def drop(self, namespace: str, resource: str) -> None:
        self.use(namespace, resource, None)

    def in_use(self, namespace: str) -> set[str]:
        return {runtime for runtime, _ in self._usage.get(namespace, {}).values()}

    def claims(self, namespace: str) -> dict[str, set[str]]:
        """Runtime in use -> the PVC claims its models name."""
        out: dict[str, set[str]] = {}
        for runtime, claim in self._usage.get(namespace, {}).values():
            out.setdefault(runtime, set()).update([claim] if claim else [])
        return out

    def poke(self, namespace: str | None = None) -> None:
        """Sync ``namespace`` (None: every known one) soon."""
        self._poked.update([namespace] if namespace else self._known)
        if namespace:
            self._known.add(namespace)
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Sync poked namespaces as they come, every known namespace each ``interval_s``."""
        next_full = 0.0
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_full - loop.time()))
            self._wake.clear()
            if loop.time() >= next_full:
                self._poked |= self._known
                next_full = loop.time() + self.interval_s
            todo, self._poked = self._poked, set()
            for namespace in sorted(todo):
                try:
                    await self.sync_namespace(namespace)
                except MeshError as exc:  # the API refused: log, and the next pass retries
                    log.warning("runtime Deployments of namespace %s not synced: %s", namespace, exc)

    async def sync_namespace(self, namespace: str) -> list[Action]:
        config = await self._config_source()
        runtimes = self._runtime_docs(namespace)
        in_use = self.in_use(namespace)
        inputs: dict[str, PodInputs] = {}
        needed = {r: c for r, c in self.claims(namespace).items() if r in runtimes}
        if needed:  # pods will run: what they mount must be there first
            problem_key = f"{namespace}/pods-blocked"
            try:
                inputs = await self.secrets.pod_inputs(config, namespace, needed)
            except SecretProblem as exc:
                await self.secrets.warnings.warn(problem_key, object_ref("Secret", namespace, exc.secret),
                                                 exc.reason, exc.message)
                return []
            self.secrets.warnings.clear(problem_key)
        listed = await self.kube.list(deployments_path(namespace))
        ours = managed_deployments(config, listed)
        hpas = managed_hpas(config, await self.kube.list(hpa_path(namespace)))
        service = await self.kube.get(services_path(namespace, config.service_name))
        actions = plan_namespace(config, namespace, runtimes, in_use, ours,
                                 service is not None, self._now(), inputs, hpas)
        warned = {f"{namespace}/{a.kind}/{a.name}/{a.key}" for a in actions if isinstance(a, Warn)}
        for key in self._warned.get(namespace, set()) - warned:  # fixed: news again if it comes back
            self.secrets.warnings.clear(key)
        self._warned[namespace] = warned
        for action in actions:
            await self._apply(namespace, action)
        if service is not None or any(isinstance(a, Create) and a.kind == "Service" for a in actions):
            await self._sync_service_monitor(config, namespace)
        return actions

    async def _sync_service_monitor(self, config: ServingConfig, namespace: str) -> None:
        """The namespace's ServiceMonitor (``deploy/monitoring.py``): kept where the Prometheus
        operator's API exists and the config wants it, deleted (if ours) where it does not."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._monitoring_checked_at + self.monitoring_ttl_s:
            self._monitoring = serves_service_monitors(await self.kube.get(MONITORING_API))
            self._monitoring_checked_at = loop.time()
        if not self._monitoring:
            return
        path = service_monitor_path(namespace, SERVICE_MONITOR_NAME)
        existing = await self.kube.get(path)
        if not config.service_monitor_wanted:
            if existing is not None and is_ours(existing):
                log.info("deleting ServiceMonitor %s/%s (metrics off or disablePrometheusOperatorSupport)",
                         namespace, SERVICE_MONITOR_NAME)
                await self.kube.delete(path)
            return
        service = await self.kube.get(services_path(namespace, config.service_name))
        desired = service_monitor(config, namespace, str(((service or {}).get("metadata") or {}).get("uid") or ""))
        if existing is None:
            log.info("creating ServiceMonitor %s/%s", namespace, SERVICE_MONITOR_NAME)
            await self.kube.create(service_monitor_path(namespace), desired)
        elif is_ours(existing) and monitor_differs(desired, existing):
            log.info("updating ServiceMonitor %s/%s", namespace, SERVICE_MONITOR_NAME)
            await self.kube.patch(path, {"spec": desired["spec"]})

    async def _apply(self, namespace: str, action: Action) -> None:
        if isinstance(action, Warn):
            ref = object_ref(action.kind, namespace, action.name, api_version="serving.kserve.io/v1alpha1")
            await self.secrets.warnings.warn(f"{namespace}/{action.kind}/{action.name}/{action.key}", ref,
                                             action.reason, action.message)
            return
        path = {"Deployment": deployments_path, HPA: hpa_path}.get(action.kind, services_path)
        if isinstance(action, Create):
            log.info("creating %s %s/%s", action.kind, namespace, action.body["metadata"]["name"])
            await self.kube.create(path(namespace), action.body)
        elif isinstance(action, Patch):
            log.info("updating %s %s/%s: %s", action.kind, namespace, action.name, sorted(action.body))
            await self.kube.patch(path(namespace, action.name), action.body)
        else:
            log.info("deleting %s %s/%s (its runtime is gone)", action.kind, namespace, action.name)
            await self.kube.delete(path(namespace, action.name))


class ConfigSource:
    """The model-serving-config ConfigMap, read at most every ``ttl_s`` seconds. Every key that has
    no effect (accepted but unused, unknown, or with a bad value: its default is used, the other
    keys are) is a Warning Event on the ConfigMap naming it (and a log line), once each; a
    ``config.yaml`` that is not a YAML mapping keeps the last good config (one Event too)."""

    def __init__(self, kube: KubeApi, namespace: str, name: str, *, image: str = "", ttl_s: float = 10.0,
                 warnings: Warnings | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.image = image
        self.ttl_s = ttl_s
        self.warnings = warnings or Warnings(kube)
        self._config: ServingConfig | None = None
        self._read_at = float("-inf")
        self._warned: set[str] = set()

    async def __call__(self) -> ServingConfig:
        loop = asyncio.get_running_loop()
        if self._config is not None and loop.time() - self._read_at < self.ttl_s:
            return self._config
        self._read_at = loop.time()
        doc: dict[str, Any] | None = None
        try:
            doc = await self.kube.get(configmap_path(self.namespace, self.name))
            config = ServingConfig.from_configmap((doc or {}).get("data"))
        except MeshError as exc:
            config = self._config or ServingConfig()
            await self._report(doc, [("invalid", "InvalidConfig", f"not used (the last good config stays): {exc}")])
        else:
            await self._report(doc, [(w.key, w.reason, str(w)) for w in config.warnings])
        if self.image:
            config = replace(config, image=self.image)
        self._config = config
        return config

    async def _report(self, doc: Mapping[str, Any] | None, problems: list[tuple[str, str, str]]) -> None:
        uid = str(((doc or {}).get("metadata") or {}).get("uid") or "")
        ref = object_ref("ConfigMap", self.namespace, self.name, uid=uid)
        now = {f"config/{key}" for key, _, _ in problems}
        for key in self._warned - now:
            self.warnings.clear(key)
        self._warned = now
        for key, reason, message in problems:
            await self.warnings.warn(f"config/{key}", ref, reason, message)

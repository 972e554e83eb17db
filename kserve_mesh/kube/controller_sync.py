"""Keeps each namespace's runtime Deployments and Service in line with the runtimes its models use.

Model handlers tell ``RuntimeSync`` which runtime each InferenceService / Predictor resolved to
(``use`` / ``drop``) and poke the namespace; one owned background task syncs poked namespaces at
once and every namespace it knows periodically (that pass is what scales an unused runtime to zero
after its grace period). A sync reads the ConfigMap, the runtimes (from kopf's indexes, handed in
as a callable) and our Deployments, plans with ``deploy_plan.plan_namespace`` and applies the plan.

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
from kserve_mesh.kube.controller_kube import KubeApi, configmap_path, deployments_path, services_path
from kserve_mesh.kube.deploy_config import ServingConfig
from kserve_mesh.kube.deploy_plan import Create, Delete, Patch, managed_deployments, plan_namespace

log = logging.getLogger(__name__)

RuntimeDocs = Callable[[str], Mapping[str, Mapping[str, Any]]]


class RuntimeSync:
    def __init__(self, kube: KubeApi, config_source: Callable[[], Awaitable[ServingConfig]],
                 runtime_docs: RuntimeDocs, *,
                 interval_s: float = 10.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self._config_source = config_source
        self._runtime_docs = runtime_docs
        self.interval_s = interval_s
        self._now = wall_clock
        self._usage: dict[str, dict[str, str]] = defaultdict(dict)  # namespace -> resource key -> runtime
        self._known: set[str] = set()
        self._poked: set[str] = set()
        self._wake = asyncio.Event()

    # -- what the model handlers report ----------------------------------------------------------
    def use(self, namespace: str, resource: str, runtime: str | None) -> None:
        """``resource`` (``kind/name``) in ``namespace`` uses ``runtime`` (None: none right now)."""
        before = self._usage[namespace].get(resource)
        if runtime is None:
            self._usage[namespace].pop(resource, None)
        else:
            self._usage[namespace][resource] = runtime
        if before != runtime:
            self.poke(namespace)

    def drop(self, namespace: str, resource: str) -> None:
        self.use(namespace, resource, None)

    def in_use(self, namespace: str) -> set[str]:
        return set(self._usage.get(namespace, {}).values())

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

    async def sync_namespace(self, namespace: str) -> list[Create | Patch | Delete]:
        config = await self._config_source()
        runtimes = self._runtime_docs(namespace)
        listed = await self.kube.list(deployments_path(namespace))
        ours = managed_deployments(config, listed)
        service = await self.kube.get(services_path(namespace, config.service_name))
        actions = plan_namespace(config, namespace, runtimes, self.in_use(namespace), ours,
                                 service is not None, self._now())
        for action in actions:
            await self._apply(namespace, action)
        return actions

    async def _apply(self, namespace: str, action: Create | Patch | Delete) -> None:
        path = deployments_path if action.kind == "Deployment" else services_path
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
    """The model-serving-config ConfigMap, read at most every ``ttl_s`` seconds; a bad one keeps the
    last good config (and logs why)."""

    def __init__(self, kube: KubeApi, namespace: str, name: str, *, image: str = "", ttl_s: float = 10.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.image = image
        self.ttl_s = ttl_s
        self._config: ServingConfig | None = None
        self._read_at = float("-inf")

    async def __call__(self) -> ServingConfig:
        loop = asyncio.get_running_loop()
        if self._config is not None and loop.time() - self._read_at < self.ttl_s:
            return self._config
        self._read_at = loop.time()
        try:
            doc = await self.kube.get(configmap_path(self.namespace, self.name))
            config = ServingConfig.from_configmap((doc or {}).get("data"))
        except MeshError as exc:
            log.warning("ConfigMap %s/%s not used: %s", self.namespace, self.name, exc)
            config = self._config or ServingConfig()
        else:
            if config.ignored_keys and (self._config is None or self._config.ignored_keys != config.ignored_keys):
                log.info("ConfigMap %s/%s: keys with no effect here: %s", self.namespace, self.name,
                         ", ".join(config.ignored_keys))
        if self.image:
            config = replace(config, image=self.image)
        self._config = config
        return config

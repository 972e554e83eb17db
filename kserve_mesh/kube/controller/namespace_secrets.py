"""What a namespace's runtime pods depend on beyond the config, read (and made) through the API.

- ``pod_inputs``: before the runtime Deployments of a namespace are created or changed, the auth
  Secret exists (made once when absent: ``deploy_security.new_auth_secret``), the TLS Secret of
  ``tls.secretName`` is there with ``tls.crt`` and ``tls.key``, and the PVC claims are known: the
  ``pvc`` entries of the storage-config Secret, plus, with ``allowAnyPVC``, the claims the
  namespace's models name that exist (a Deployment mounting a missing claim would never start, so
  ModelMesh left those out, and so do we). A missing or unusable Secret raises ``SecretProblem``:
  the sync posts it as a Warning Event and leaves that namespace's Deployments as they are.
- ``credentials``: how the controller calls the namespace's mesh (the admin token of the auth
  Secret, and TLS from the TLS Secret: its CA, and its certificate as the client certificate when
  client certificates are required).

Reads are cached for ``ttl_s`` (the model handlers ask on every reconcile); a Secret the controller
made is cached as made. Secret values are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from kserve_mesh.core.errors import MeshError, StorageError
from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import common_labels
from kserve_mesh.kube.controller.deploy.security import (
    ADMIN_TOKEN_KEY,
    TLS_CA,
    TLS_CERT,
    TLS_KEY,
    PodInputs,
    SecretProblem,
    TlsSecret,
    auth_secret_name,
    check_auth_secret,
    check_tls_secret,
    new_auth_secret,
    peer_subject,
    secret_data,
    valid_claim,
)
from kserve_mesh.kube.controller.kube_api import KubeApi, KubeApiError, Warnings, object_ref, pvc_path, secrets_path
from kserve_mesh.kube.controller.mesh_client import MeshCredentials, MeshTls
from kserve_mesh.storage.config import parse_entry

log = logging.getLogger(__name__)


class NamespaceSecrets:
    def __init__(self, kube: KubeApi, warnings: Warnings, *, ttl_s: float = 10.0,
                 new_secret: Callable[..., dict[str, Any]] = new_auth_secret) -> None:
        self.kube = kube
        self.warnings = warnings
        self.ttl_s = ttl_s
        self._new_secret = new_secret
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._credential_problems: dict[str, str] = {}

    async def _get(self, path: str) -> dict[str, Any] | None:
        now = asyncio.get_running_loop().time()
        hit = self._cache.get(path)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        doc = await self.kube.get(path)
        self._cache[path] = (now, doc)
        return doc

    async def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret, or None when absent; one the controller may not read is a ``SecretProblem``
        (the shipped RBAC names the Secrets it may read)."""
        try:
            return await self._get(secrets_path(namespace, name))
        except KubeApiError as exc:
            if exc.status != 403:
                raise
            raise SecretProblem("SecretForbidden", name, (
                f"the controller may not read Secret {name}: add its name to the resourceNames of the "
                f"Secret rule of the controller's Role or ClusterRole ({exc})")) from exc

    def _remember(self, path: str, doc: dict[str, Any] | None) -> None:
        self._cache[path] = (asyncio.get_running_loop().time(), doc)

    # -- what the pods need ------------------------------------------------------------------------
    async def ensure_auth(self, config: ServingConfig, namespace: str) -> str:
        """The namespace's auth Secret exists and holds what the pods mount (made when absent);
        returns the digest of its peer token."""
        name = auth_secret_name(config)
        path = secrets_path(namespace, name)
        doc = await self._secret(namespace, name)
        if doc is None:
            body = self._new_secret(config, namespace, common_labels(config))
            try:
                doc = await self.kube.create(secrets_path(namespace), body) or body
                log.info("created Secret %s/%s: the tokens of the mesh in this namespace", namespace, name)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise SecretProblem("AuthSecretNotCreated", name, f"Secret {name} could not be created, so "
                                        f"runtime pods (which need its tokens) are not created or updated: {exc}") \
                        from exc
                doc = await self.kube.get(path)  # made meanwhile (another controller, or the user)
            self._remember(path, doc)
        return check_auth_secret(doc or {}, name)

    async def tls(self, config: ServingConfig, namespace: str) -> TlsSecret | None:
        if not config.tls_enabled:
            return None
        return check_tls_secret(await self._secret(namespace, config.tls_secret_name), config.tls_secret_name)

    async def storage_claims(self, config: ServingConfig, namespace: str) -> set[str]:
        """Claims named by ``pvc`` entries of the storage-config Secret (mounted in every runtime pod)."""
        doc = await self._secret(namespace, config.storage_secret_name)
        claims: set[str] = set()
        for key, raw in sorted(secret_data(doc).items()):
            try:
                entry = parse_entry(key, raw)
            except StorageError as exc:
                await self._warn_secret(namespace, config.storage_secret_name, f"storage/{key}",
                                        "StorageConfigInvalid", f"entry {key!r} not used: {exc}")
                continue
            claim = entry.get("name")
            if entry.type != "pvc" or not claim:
                continue
            if not valid_claim(claim):
                await self._warn_secret(namespace, config.storage_secret_name, f"storage/{key}",
                                        "StorageConfigInvalid", f"entry {key!r}: {claim!r} is not a PVC name")
                continue
            claims.add(claim)
        return claims

    async def _warn_secret(self, namespace: str, secret: str, key: str, reason: str, message: str) -> None:
        await self.warnings.warn(f"{namespace}/{key}", object_ref("Secret", namespace, secret), reason, message)

    async def _claim_exists(self, namespace: str, claim: str) -> bool:
        try:
            return await self._get(pvc_path(namespace, claim)) is not None
        except KubeApiError as exc:
            log.warning("PVC %s/%s not checked, so not mounted: %s", namespace, claim, exc)
            return False

    async def pod_inputs(self, config: ServingConfig, namespace: str,
                         claims_by_runtime: Mapping[str, AbstractSet[str]]) -> dict[str, PodInputs]:
        """``PodInputs`` of each runtime in use (``claims_by_runtime``: the claims its models name).
        Raises ``SecretProblem`` when the pods cannot be made right now."""
        peer = await self.ensure_auth(config, namespace)
        tls = await self.tls(config, namespace)
        shared = await self.storage_claims(config, namespace)
        out: dict[str, PodInputs] = {}
        for runtime, named in claims_by_runtime.items():
            claims = set(shared)
            for claim in sorted(set(named) - shared):
                ref = object_ref("PersistentVolumeClaim", namespace, claim)
                if not valid_claim(claim):
                    continue  # the mesh refuses such a model path itself
                if not config.allow_any_pvc:
                    await self.warnings.warn(f"{namespace}/pvc/{claim}", ref, "PVCNotAllowed", (
                        f"a model names PVC {claim}, which is not mounted: it is no pvc entry of "
                        f"{config.storage_secret_name} and allowAnyPVC is off"))
                elif await self._claim_exists(namespace, claim):
                    claims.add(claim)
                    self.warnings.clear(f"{namespace}/pvc/{claim}")
                else:
                    await self.warnings.warn(f"{namespace}/pvc/{claim}", ref, "PVCNotFound", (
                        f"a model names PVC {claim}, which does not exist: not mounted (a missing claim "
                        f"would keep the runtime pods from starting)"))
            out[runtime] = PodInputs(tls=tls, pvc_claims=tuple(sorted(claims)), peer_token_digest=peer)
        return out

    # -- how the controller calls the mesh ----------------------------------------------------------
    async def credentials(self, config: ServingConfig, namespace: str) -> MeshCredentials:
        """The admin token and TLS settings for the namespace's mesh (what is readable of them)."""
        token: str | None = None
        tls: MeshTls | None = None
        try:
            auth = secret_data(await self._secret(namespace, auth_secret_name(config)))
            token = auth.get(ADMIN_TOKEN_KEY, b"").decode("utf-8", "replace").strip() or None
            if config.tls_enabled:
                data = secret_data(await self._secret(namespace, config.tls_secret_name))
                cert, key = data.get(TLS_CERT), data.get(TLS_KEY)
                if cert and key:
                    tls = MeshTls(root_pem=data.get(TLS_CA) or cert, server_name=peer_subject(config, namespace),
                                  cert_pem=cert, key_pem=key)
        except (MeshError, SecretProblem) as exc:
            if self._credential_problems.get(namespace) != str(exc):  # once, not on every reconcile
                log.warning("credentials for the mesh of namespace %s not read: %s", namespace, exc)
            self._credential_problems[namespace] = str(exc)
        else:
            self._credential_problems.pop(namespace, None)
        return MeshCredentials(token=token, tls=tls)

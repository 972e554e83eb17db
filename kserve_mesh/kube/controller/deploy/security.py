"""What makes a runtime pod's mesh container safe to expose (pure): TLS from ``tls.secretName``,
authentication from a generated Secret, and the PVC claims it may read.

The mesh container binds 0.0.0.0, so authentication is on (``kserve-mesh instance`` refuses to
start on a non-loopback address without an auth file). Per namespace:

- **The auth Secret** ``<inferenceServiceName>-auth`` (:func:`new_auth_secret`), made once by the
  controller when absent and never overwritten (users rotate tokens by editing it; the instance
  re-reads its auth file when the mounted Secret changes): ``auth.yaml`` (the instance's
  ``--auth-file``: an admin token, an infer token, the peers' token, and the peers' certificate
  identity), ``admin-token`` and ``infer-token`` (for users and for the controller, which calls the
  management API as admin), ``peer-token`` (the instance's ``--peer-token-file``). Only
  ``auth.yaml`` and ``peer-token`` are mounted into the mesh container.
- **TLS**, as ModelMesh Serving documents ``tls.secretName`` / ``tls.clientAuth``: the Secret
  (``tls.crt``, ``tls.key``, optional ``ca.crt``) is mounted read-only; it serves every port, and
  "the internal links will use mutual TLS regardless of whether client authentication is required
  for the external connections": client certificates are at least ``optional`` (a peer presents
  the mesh certificate, checked against ``ca.crt``, else ``tls.crt`` itself), peers' certificates
  are checked against ``<inferenceServiceName>.<namespace>`` (the name ModelMesh's docs put in the
  certificate), and that name is an ``admin`` identity in ``auth.yaml``. Probes switch to HTTPS;
  with ``require`` the kubelet (which has no client certificate) cannot probe over HTTP, so the
  probes run inside the container with the mounted certificate.
- **PVCs**: claims are mounted read-only at ``/pvc_mounts/<claim>`` (ModelMesh's place) in every
  container of the pod (a model on a PVC is read in place by the runtime).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from kserve_mesh.core.errors import InvalidArgument
from kserve_mesh.kube.controller.deploy.config import ServingConfig

TLS_VOLUME = "mesh-tls"
TLS_PATH = "/etc/kserve-mesh/tls"
AUTH_VOLUME = "mesh-auth"
AUTH_PATH = "/etc/kserve-mesh/auth"
PVC_ROOT = "/pvc_mounts"
PVC_VOLUME_PREFIX = "pvc-"

TLS_CERT, TLS_KEY, TLS_CA = "tls.crt", "tls.key", "ca.crt"
AUTH_FILE_KEY = "auth.yaml"
ADMIN_TOKEN_KEY = "admin-token"
INFER_TOKEN_KEY = "infer-token"
PEER_TOKEN_KEY = "peer-token"
AUTH_SECRET_KEYS = (AUTH_FILE_KEY, ADMIN_TOKEN_KEY, INFER_TOKEN_KEY, PEER_TOKEN_KEY)
MOUNTED_AUTH_KEYS = (AUTH_FILE_KEY, PEER_TOKEN_KEY)
PEER_IDENTITY = "mesh-peers"
PEER_TOKEN_ANNOTATION = "kserve-mesh.kserve.io/peer-token-digest"


class SecretProblem(Exception):
    """A Secret the runtime pods need is missing or unusable; ``reason`` is an Event reason."""

    def __init__(self, reason: str, secret: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.secret = secret
        self.message = message


# -- Secret contents -------------------------------------------------------------------------------

def secret_data(doc: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The decoded ``data`` of a Secret as the API returns it (values base64); undecodable values
    are left out."""
    out: dict[str, bytes] = {}
    for key, value in ((doc or {}).get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            continue
    return out


def auth_secret_name(config: ServingConfig) -> str:
    """``<inferenceServiceName>-auth``: one per namespace, next to the Service of that name."""
    return f"{config.service_name}-auth"


def peer_subject(config: ServingConfig, namespace: str) -> str:
    """The name in the mesh certificate (ModelMesh's docs: ``DNS:modelmesh-serving.${NAMESPACE}``)."""
    return f"{config.service_name}.{namespace}"


def auth_file_text(*, admin: str, infer: str, peer: str, peer_subject: str) -> str:
    """``auth.yaml`` for ``kserve-mesh instance --auth-file``."""
    doc = {
        "tokens": [
            {"name": "admin", "role": "admin", "token": admin},
            {"name": "infer", "role": "infer", "token": infer},
            {"name": PEER_IDENTITY, "role": "admin", "token": peer},
        ],
        # Peers present the mesh certificate when TLS is on (tls.secretName); without TLS no client
        # certificate is ever seen and this entry matches nothing.
        "identities": [{"name": PEER_IDENTITY, "role": "admin", "subject": peer_subject}],
    }
    header = ("# Generated once by kserve-mesh-controller; it never overwrites this Secret. To rotate a\n"
              "# token, change it here and in the matching *-token key of the Secret.\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


def new_auth_secret(config: ServingConfig, namespace: str, labels: Mapping[str, str],
                    token: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> dict[str, Any]:
    """A fresh auth Secret for ``namespace`` (new random tokens on every call)."""
    admin, infer, peer = token(), token(), token()
    values = {
        AUTH_FILE_KEY: auth_file_text(admin=admin, infer=infer, peer=peer,
                                      peer_subject=peer_subject(config, namespace)),
        ADMIN_TOKEN_KEY: admin,
        INFER_TOKEN_KEY: infer,
        PEER_TOKEN_KEY: peer + "\n",
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": auth_secret_name(config),
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {"kserve-mesh.kserve.io/description": (
                "Bearer tokens of the mesh in this namespace (admin-token: everything; infer-token: "
                "inference and reads). Made once by the controller, never overwritten.")},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def check_auth_secret(doc: Mapping[str, Any], name: str) -> str:
    """The digest of the peer token (``PodInputs.peer_token_digest``); :class:`SecretProblem` when
    the auth Secret lacks what the mesh container mounts."""
    data = secret_data(doc)
    missing = [k for k in MOUNTED_AUTH_KEYS if not data.get(k, b"").strip()]
    if missing:
        raise SecretProblem("AuthSecretInvalid", name, f"Secret {name} lacks {', '.join(missing)}: runtime pods "
                            f"are not updated until it has them (delete the Secret to have a new one made)")
    return hashlib.sha256(data[PEER_TOKEN_KEY].strip()).hexdigest()[:16]


def pod_annotations(inputs: PodInputs) -> dict[str, str]:
    return {PEER_TOKEN_ANNOTATION: inputs.peer_token_digest} if inputs.peer_token_digest else {}


@dataclass(frozen=True)
class TlsSecret:
    """A checked ``tls.secretName`` Secret: its name and whether it carries a CA (``ca.crt``)."""

    name: str
    has_ca: bool = False

    @property
    def ca_key(self) -> str:
        """The file trusted for client and peer certificates: ``ca.crt``, else ``tls.crt`` itself."""
        return TLS_CA if self.has_ca else TLS_CERT


def check_tls_secret(doc: Mapping[str, Any] | None, name: str) -> TlsSecret:
    """The TLS Secret as the pods will use it, or :class:`SecretProblem` saying what is wrong."""
    if doc is None:
        raise SecretProblem("TLSSecretMissing", name, f"tls.secretName names Secret {name}, which does not exist "
                            "in this namespace: runtime pods are not created or updated until it does")
    data = secret_data(doc)
    for key in (TLS_CERT, TLS_KEY):
        if b"-----BEGIN" not in data.get(key, b""):
            raise SecretProblem("TLSSecretInvalid", name, f"Secret {name} has no PEM {key}: runtime pods are not "
                                "created or updated until it has tls.crt and tls.key")
    return TlsSecret(name, has_ca=b"-----BEGIN" in data.get(TLS_CA, b""))


# -- the pod ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodInputs:
    """What the controller found in a namespace that a runtime's pods depend on."""

    tls: TlsSecret | None = None
    """The checked TLS Secret (None: no TLS)."""
    pvc_claims: tuple[str, ...] = ()
    """PVCs to mount at /pvc_mounts/<claim>, sorted (a different order would restart the pods)."""
    peer_token_digest: str = ""
    """A digest of the auth Secret's peer token: an instance reads that file only when it starts, so
    a new peer token (a rotated or re-made Secret) changes the pod template and restarts the pods."""


NO_INPUTS = PodInputs()


def instance_security_args(config: ServingConfig, namespace: str, inputs: PodInputs) -> list[str]:
    """The flags of ``kserve-mesh instance`` for authentication, TLS and PVC access."""
    args = ["--auth", "on", "--auth-file", f"{AUTH_PATH}/{AUTH_FILE_KEY}",
            "--peer-token-file", f"{AUTH_PATH}/{PEER_TOKEN_KEY}", "--pvc-mount-root", PVC_ROOT]
    if config.allow_any_pvc:
        args.append("--allow-any-pvc")
    tls = inputs.tls
    if tls is not None:
        ca = f"{TLS_PATH}/{tls.ca_key}"
        client_auth = "require" if config.tls_client_auth == "require" else "optional"
        args += ["--tls-cert", f"{TLS_PATH}/{TLS_CERT}", "--tls-key", f"{TLS_PATH}/{TLS_KEY}",
                 "--tls-client-ca", ca, "--tls-ca", ca, "--tls-client-auth", client_auth,
                 "--tls-server-name", peer_subject(config, namespace)]
        if config.tls_metrics:
            args.append("--tls-metrics")
    return args


def instance_mounts(inputs: PodInputs) -> list[dict[str, Any]]:
    """Volume mounts of the mesh container: the auth files, the TLS Secret, the PVCs."""
    mounts = [{"name": AUTH_VOLUME, "mountPath": AUTH_PATH, "readOnly": True}]
    if inputs.tls is not None:
        mounts.append({"name": TLS_VOLUME, "mountPath": TLS_PATH, "readOnly": True})
    return mounts + pvc_mounts(inputs.pvc_claims)


def pod_volumes(config: ServingConfig, inputs: PodInputs) -> list[dict[str, Any]]:
    # No subPath anywhere: the kubelet updates a mounted Secret only as a whole directory, and the
    # instance re-reads its auth and certificate files when they change.
    volumes: list[dict[str, Any]] = [{"name": AUTH_VOLUME, "secret": {
        "secretName": auth_secret_name(config),
        "items": [{"key": k, "path": k} for k in MOUNTED_AUTH_KEYS]}}]
    if inputs.tls is not None:
        items = [TLS_CERT, TLS_KEY] + ([TLS_CA] if inputs.tls.has_ca else [])
        volumes.append({"name": TLS_VOLUME, "secret": {"secretName": inputs.tls.name,
                                                       "items": [{"key": k, "path": k} for k in items]}})
    return volumes + pvc_volumes(inputs.pvc_claims)


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def valid_claim(name: str) -> bool:
    """A PVC name (DNS-1123 subdomain): nothing else may become a path under /pvc_mounts."""
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def pvc_volume_name(claim: str) -> str:
    """``pvc-<claim>``, or a shortened name with a digest when the claim is no DNS label of <= 59."""
    if len(claim) <= 63 - len(PVC_VOLUME_PREFIX) and _DNS_LABEL.fullmatch(claim):
        return f"{PVC_VOLUME_PREFIX}{claim}"
    digest = hashlib.sha256(claim.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]", "-", claim)[:63 - len(PVC_VOLUME_PREFIX) - 11].strip("-")
    return f"{PVC_VOLUME_PREFIX}{stem}-{digest}"


def _checked(claims: Sequence[str]) -> Sequence[str]:
    bad = [c for c in claims if not valid_claim(c)]
    if bad:
        raise InvalidArgument(f"not a PVC name: {bad[0]!r}")
    return claims


def pvc_volumes(claims: Sequence[str]) -> list[dict[str, Any]]:
    return [{"name": pvc_volume_name(c), "persistentVolumeClaim": {"claimName": c, "readOnly": True}}
            for c in _checked(claims)]


def pvc_mounts(claims: Sequence[str]) -> list[dict[str, Any]]:
    return [{"name": pvc_volume_name(c), "mountPath": f"{PVC_ROOT}/{c}", "readOnly": True}
            for c in _checked(claims)]


def health_probe(config: ServingConfig, inputs: PodInputs, path: str) -> dict[str, Any]:
    """How the kubelet checks ``path`` on the REST port: plain HTTP, HTTPS, or, when client
    certificates are required, a check run inside the container with the mounted certificate."""
    if inputs.tls is None:
        return {"httpGet": {"path": path, "port": config.rest_port, "scheme": "HTTP"}}
    if config.tls_client_auth != "require":
        return {"httpGet": {"path": path, "port": config.rest_port, "scheme": "HTTPS"}}
    script = (
        "import ssl,urllib.request as u;"
        "c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT);c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;"
        f"c.load_cert_chain('{TLS_PATH}/{TLS_CERT}','{TLS_PATH}/{TLS_KEY}');"
        f"u.urlopen('https://127.0.0.1:{config.rest_port}{path}',timeout=4,context=c)"
    )
    return {"exec": {"command": ["python", "-c", script]}}

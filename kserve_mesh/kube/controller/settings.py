"""Settings of ``kserve-mesh controller``, typed and read once at the process edge.

Flags win over environment variables, which win over defaults. The environment names are the ones
the shipped manifests set (``manifests/base/system/controller/deployment.yaml``):

=====================================  ====================================  ===========================
flag                                   environment                           default
=====================================  ====================================  ===========================
``--kubeconfig PATH``                  ``KUBECONFIG``                        in-cluster service account,
                                                                             else ``~/.kube/config``
``--mesh-address TEMPLATE``            ``KSERVE_MESH_MESH_ADDRESS``          ``{service}.{namespace}:{port}``
``--namespace-scope``                  ``KSERVE_MESH_NAMESPACE_SCOPE=true``  off (cluster scope)
``--namespace NS``                     ``KSERVE_MESH_WATCH_NAMESPACE``       the controller's namespace
``--controller-namespace NS``          ``KSERVE_MESH_CONTROLLER_NAMESPACE``  ``POD_NAMESPACE``, else
                                       or ``POD_NAMESPACE``                  ``default``
``--config-map NAME``                  ``KSERVE_MESH_CONFIG_MAP``            ``model-serving-config``
``--instance-image IMAGE``             ``KSERVE_MESH_INSTANCE_IMAGE``        the ConfigMap's (or built-in)
``--no-deployments``                   ``KSERVE_MESH_MANAGE_DEPLOYMENTS``    manage them
``--health-port PORT``                 ``KSERVE_MESH_HEALTH_PORT``           none (0)
``--status-interval SECONDS``          ``KSERVE_MESH_STATUS_INTERVAL``       3
``--log-level LEVEL``                  ``KSERVE_MESH_LOG_LEVEL``             INFO
``--leader-election-lease NAME``       ``KSERVE_MESH_LEADER_ELECTION_LEASE`` none: no election (one
                                                                             replica only)
``--lease-duration SECONDS``           ``KSERVE_MESH_LEASE_DURATION``        15
``--lease-renew-deadline SECONDS``     ``KSERVE_MESH_LEASE_RENEW_DEADLINE``  10
``--lease-retry-period SECONDS``       ``KSERVE_MESH_LEASE_RETRY_PERIOD``    2
(the candidate's identity)             ``KSERVE_MESH_POD_NAME``              the host name, + a random
                                                                             suffix either way
=====================================  ====================================  ===========================

With ``--leader-election-lease``, replicas elect a leader through that Lease in the controller's
namespace (``leader.py``): only the leader reconciles; the others wait and take over when its
Lease is not renewed for the lease duration.

``--mesh-address`` is where the management gRPC API of the mesh serving a namespace is: a fixed
``host:port`` (one mesh for every namespace, e.g. a laptop's) or a template with ``{namespace}``,
``{service}`` and ``{port}`` (one mesh per namespace, ModelMesh Serving's layout: the
``modelmesh-serving`` Service of that namespace).
"""

from __future__ import annotations

import argparse
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kserve_mesh.core.errors import InvalidArgument

DEFAULT_MESH_ADDRESS = "{service}.{namespace}:{port}"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class InvalidControllerSettings(InvalidArgument):
    """A flag or environment variable of the controller is wrong; the message names it."""


@dataclass(frozen=True)
class ControllerSettings:
    kubeconfig: Path | None = None
    mesh_address: str = DEFAULT_MESH_ADDRESS
    namespace_scope: bool = False
    namespace: str = ""
    """The one namespace watched in namespace scope (empty in cluster scope)."""
    controller_namespace: str = "default"
    """Where the controller runs and reads its ConfigMap."""
    config_map: str = "model-serving-config"
    instance_image: str = ""
    manage_deployments: bool = True
    health_port: int = 0
    status_interval_s: float = 3.0
    settled_interval_s: float = 30.0
    """How often a Loaded, up-to-date resource is re-checked (unsettled ones: status_interval_s)."""
    sync_interval_s: float = 10.0
    """How often runtime Deployments are re-checked (scale to zero happens on such a pass)."""
    mesh_deadline_s: float = 10.0
    log_level: str = "INFO"
    leader_election_lease: str = ""
    """Name of the Lease replicas elect a leader through ("" = no election: run at once)."""
    identity: str = ""
    """This replica's name in the Lease (pod name or host name, plus a random suffix)."""
    lease_duration_s: float = 15.0
    lease_renew_deadline_s: float = 10.0
    lease_retry_s: float = 2.0

    def mesh_address_for(self, namespace: str, service: str, port: int) -> str:
        return self.mesh_address.format(namespace=namespace, service=service, port=port)

    @classmethod
    def from_args(cls, argv: list[str], environ: Mapping[str, str]) -> ControllerSettings:
        args = _parser().parse_args(argv)

        def env(name: str, default: str = "") -> str:
            return environ.get(name, default)

        def flag(name: str, value: str) -> bool:
            text = value.strip().lower()
            if text in TRUE:
                return True
            if text in FALSE:
                return False
            raise InvalidControllerSettings(f"{name} must be true or false, got {value!r}")

        controller_ns = (args.controller_namespace or env("KSERVE_MESH_CONTROLLER_NAMESPACE")
                         or env("POD_NAMESPACE") or "default")
        scope = args.namespace_scope or flag("KSERVE_MESH_NAMESPACE_SCOPE", env("KSERVE_MESH_NAMESPACE_SCOPE"))
        namespace = args.namespace or env("KSERVE_MESH_WATCH_NAMESPACE")
        if namespace and not args.namespace_scope and not scope:
            scope = True  # --namespace NS alone means "watch NS only"
        if scope and not namespace:
            namespace = controller_ns
        kubeconfig = args.kubeconfig or env("KUBECONFIG")
        health = args.health_port if args.health_port is not None else _int(
            "KSERVE_MESH_HEALTH_PORT", env("KSERVE_MESH_HEALTH_PORT", "0"))
        if not 0 <= health <= 65535:
            raise InvalidControllerSettings(f"--health-port must be a port (0 = none), got {health}")
        interval = args.status_interval if args.status_interval is not None else _float(
            "KSERVE_MESH_STATUS_INTERVAL", env("KSERVE_MESH_STATUS_INTERVAL", "3"))
        if interval <= 0:
            raise InvalidControllerSettings(f"--status-interval must be > 0 seconds, got {interval}")
        mesh_address = args.mesh_address or env("KSERVE_MESH_MESH_ADDRESS") or DEFAULT_MESH_ADDRESS
        try:
            mesh_address.format(namespace="ns", service="svc", port=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidControllerSettings(
                f"--mesh-address {mesh_address!r}: only {{namespace}}, {{service}} and {{port}} may be used") from exc
        if ":" not in mesh_address:
            raise InvalidControllerSettings(f"--mesh-address must be host:port, got {mesh_address!r}")
        manage = not args.no_deployments and flag("KSERVE_MESH_MANAGE_DEPLOYMENTS",
                                                   env("KSERVE_MESH_MANAGE_DEPLOYMENTS", "true"))
        lease = args.leader_election_lease if args.leader_election_lease is not None else env(
            "KSERVE_MESH_LEADER_ELECTION_LEASE")
        if lease and not _DNS_NAME.fullmatch(lease):
            raise InvalidControllerSettings(f"--leader-election-lease must be a Lease name (DNS subdomain), "
                                            f"got {lease!r}")

        def seconds(flag_value: float | None, name: str, var: str, default: str) -> float:
            value = flag_value if flag_value is not None else _float(var, env(var, default))
            if value <= 0:
                raise InvalidControllerSettings(f"{name} must be > 0 seconds, got {value}")
            return value

        duration = seconds(args.lease_duration, "--lease-duration", "KSERVE_MESH_LEASE_DURATION", "15")
        deadline = seconds(args.lease_renew_deadline, "--lease-renew-deadline", "KSERVE_MESH_LEASE_RENEW_DEADLINE",
                           "10")
        retry = seconds(args.lease_retry_period, "--lease-retry-period", "KSERVE_MESH_LEASE_RETRY_PERIOD", "2")
        if not duration > deadline:
            raise InvalidControllerSettings(f"--lease-duration ({duration}) must be longer than "
                                            f"--lease-renew-deadline ({deadline})")
        if not deadline > 1.2 * retry:
            raise InvalidControllerSettings(f"--lease-renew-deadline ({deadline}) must be longer than 1.2 x "
                                            f"--lease-retry-period ({retry})")
        identity = f"{env('KSERVE_MESH_POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        return cls(
            leader_election_lease=lease,
            identity=identity,
            lease_duration_s=duration,
            lease_renew_deadline_s=deadline,
            lease_retry_s=retry,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            mesh_address=mesh_address,
            namespace_scope=scope,
            namespace=namespace if scope else "",
            controller_namespace=controller_ns,
            config_map=args.config_map or env("KSERVE_MESH_CONFIG_MAP") or "model-serving-config",
            instance_image=args.instance_image or env("KSERVE_MESH_INSTANCE_IMAGE"),
            manage_deployments=manage,
            health_port=health,
            status_interval_s=interval,
            settled_interval_s=max(30.0, interval),
            log_level=(args.log_level or env("KSERVE_MESH_LOG_LEVEL") or "INFO").upper(),
        )


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidControllerSettings(f"{name} must be an integer, got {value!r}") from None


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidControllerSettings(f"{name} must be a number, got {value!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidControllerSettings(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kserve-mesh controller",
                description="Watch InferenceServices, Predictors and ServingRuntimes; register models with "
                            "the mesh, run the runtime Deployments, write status.")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--mesh-address", help="management gRPC of the mesh: host:port or a template with "
                                          f"{{namespace}} {{service}} {{port}} (default {DEFAULT_MESH_ADDRESS})")
    p.add_argument("--namespace-scope", action="store_true", help="watch one namespace only")
    p.add_argument("--namespace", help="the namespace to watch (implies --namespace-scope)")
    p.add_argument("--controller-namespace", help="namespace of the controller and its ConfigMap")
    p.add_argument("--config-map", help="name of the model-serving-config ConfigMap")
    p.add_argument("--instance-image", help="image of the mesh container in runtime pods")
    p.add_argument("--no-deployments", action="store_true", help="do not create runtime Deployments/Services")
    p.add_argument("--health-port", type=int, help="serve /healthz on this port (0 = none)")
    p.add_argument("--status-interval", type=float, help="seconds between status checks of a loading model")
    p.add_argument("--log-level", help="DEBUG | INFO | WARNING | ERROR")
    p.add_argument("--leader-election-lease", help="elect a leader among replicas through this Lease "
                                                   "(in the controller's namespace)")
    p.add_argument("--lease-duration", type=float, help="seconds a leader's claim lasts unrenewed")
    p.add_argument("--lease-renew-deadline", type=float, help="seconds the leader keeps leading without "
                                                              "a successful renewal")
    p.add_argument("--lease-retry-period", type=float, help="seconds between tries to take or renew the Lease")
    return p

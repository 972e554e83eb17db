"""``kserve-mesh controller``: the Kubernetes controller process (flags: ``settings.py``).

Reads its settings once, configures logging, and runs kopf's operator with the controller's own
registry (``handlers.py``, which also starts and stops the runtime Deployment sync with
the operator): kopf stops on SIGTERM/SIGINT, then the sync task is cancelled and every client
closed. A bad flag is a one-line error and exit status 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from kserve_mesh.kube.controller.settings import ControllerSettings, InvalidControllerSettings

log = logging.getLogger(__name__)

# What each flag falls back to when not given (ControllerSettings.from_args): its variable, its default.
FLAG_FALLBACKS = {
    "kubeconfig": ("KUBECONFIG", "in-cluster, then ~/.kube/config"),
    "mesh_address": ("KSERVE_MESH_MESH_ADDRESS", "{service}.{namespace}:{port}"),
    "namespace_scope": ("KSERVE_MESH_NAMESPACE_SCOPE", "false: the whole cluster"),
    "namespace": ("KSERVE_MESH_WATCH_NAMESPACE", "the controller's namespace, in namespace scope"),
    "controller_namespace": ("KSERVE_MESH_CONTROLLER_NAMESPACE", "POD_NAMESPACE, else default"),
    "config_map": ("KSERVE_MESH_CONFIG_MAP", "model-serving-config"),
    "instance_image": ("KSERVE_MESH_INSTANCE_IMAGE", "none"),
    "no_deployments": ("KSERVE_MESH_MANAGE_DEPLOYMENTS=false", "Deployments managed"),
    "health_port": ("KSERVE_MESH_HEALTH_PORT", "0: none"),
    "status_interval": ("KSERVE_MESH_STATUS_INTERVAL", "3"),
    "log_level": ("KSERVE_MESH_LOG_LEVEL", "INFO"),
}


def parser():  # type: ignore[no-untyped-def]
    """The controller's flags, each help naming its variable and default (``controller --help``)."""
    from kserve_mesh.kube.controller.settings import _parser

    p = _parser()
    for action in p._actions:
        if action.dest in FLAG_FALLBACKS:
            env, default = FLAG_FALLBACKS[action.dest]
            text = (action.help or "").split(" (default")[0]
            action.help = f"{text} [env {env}; default: {default}]".replace("%", "%%")
    return p


async def run(settings: ControllerSettings) -> None:
    import kopf

    from kserve_mesh.kube.controller.handlers import Controller, build_registry, operator_settings

    ctl = Controller(settings)
    registry = build_registry(ctl)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    scope: dict[str, object] = ({"namespaces": [settings.namespace]} if settings.namespace_scope
                                else {"clusterwide": True})
    log.info("kserve-mesh controller: %s, mesh at %s, runtime Deployments %s",
             f"namespace {settings.namespace}" if settings.namespace_scope else "cluster scope",
             settings.mesh_address, "managed" if settings.manage_deployments else "not managed")
    try:
        await kopf.operator(registry=registry, settings=operator_settings(), standalone=True,
                            liveness_endpoint=liveness, **scope)  # type: ignore[arg-type]
    finally:
        await ctl.close()  # normally done by kopf's cleanup already; idempotent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        parser().print_help()
        return 0
    try:
        settings = ControllerSettings.from_args(args, os.environ)
    except InvalidControllerSettings as exc:
        print(f"kserve-mesh controller: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":  # kopf logs every handler and timer run at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if settings.kubeconfig is not None:
        if not settings.kubeconfig.is_file():
            print(f"kserve-mesh controller: kubeconfig {settings.kubeconfig} not found", file=sys.stderr)
            return 2
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)  # kopf's kubeconfig login reads it
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``kserve-mesh controller``: the Kubernetes controller process (flags: ``settings.py``).

Reads its settings once, configures logging, and runs kopf's operator with the controller's own
registry (``handlers.py``, which also starts and stops the runtime Deployment sync with
the operator): kopf stops on SIGTERM/SIGINT, then the sync task is cancelled and every client
closed. A bad flag is a one-line error and exit status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

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
    "leader_election_lease": ("KSERVE_MESH_LEADER_ELECTION_LEASE", "none: no election, run at once"),
    "lease_duration": ("KSERVE_MESH_LEASE_DURATION", "15"),
    "lease_renew_deadline": ("KSERVE_MESH_LEASE_RENEW_DEADLINE", "10"),
    "lease_retry_period": ("KSERVE_MESH_LEASE_RETRY_PERIOD", "2"),
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


async def run(settings: ControllerSettings) -> int:
    """Run the controller until kopf stops (SIGTERM/SIGINT); with a leader election Lease, first wait
    to be the leader, and stop when leadership is lost (exit status 1: restarted as a follower)."""
    import kopf

    from kserve_mesh.kube.controller.handlers import Controller, build_registry, login, operator_settings
    from kserve_mesh.kube.controller.kube_api import KubeHttp
    from kserve_mesh.kube.controller.leader import LeaderElector, LeaseTiming

    health = await _serve_health(settings.health_port) if settings.health_port else None
    elector: LeaderElector | None = None
    lease_client: KubeHttp | None = None
    keeper: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    ctl = Controller(settings)
    try:
        if settings.leader_election_lease:
            lease_client = KubeHttp(login(settings, settings=operator_settings()))
            elector = LeaderElector(lease_client, settings.controller_namespace, settings.leader_election_lease,
                                    settings.identity, LeaseTiming(settings.lease_duration_s,
                                                                   settings.lease_renew_deadline_s,
                                                                   settings.lease_retry_s))
            if health is not None:
                health.app["elector"] = elector
            log.info("leader election: %s is a candidate for lease %s/%s", settings.identity,
                     settings.controller_namespace, settings.leader_election_lease)
            await elector.acquire()
            keeper = asyncio.create_task(elector.keep(), name="leader-lease-renewal")
            keeper.add_done_callback(lambda _: stop.set())
        registry = build_registry(ctl)
        scope: dict[str, object] = ({"namespaces": [settings.namespace]} if settings.namespace_scope
                                    else {"clusterwide": True})
        log.info("kserve-mesh controller: %s, mesh at %s, runtime Deployments %s",
                 f"namespace {settings.namespace}" if settings.namespace_scope else "cluster scope",
                 settings.mesh_address, "managed" if settings.manage_deployments else "not managed")
        await kopf.operator(registry=registry, settings=operator_settings(), standalone=True,
                            stop_flag=stop, **scope)  # type: ignore[arg-type]
    finally:
        lost = keeper is not None and keeper.done() and not keeper.cancelled()
        if keeper is not None and not keeper.done():
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await ctl.close()  # normally done by kopf's cleanup already; idempotent
        if elector is not None and not lost:
            await elector.release()
        if lease_client is not None:
            await lease_client.close()
        if health is not None:
            await health.cleanup()
    if lost:
        log.error("kserve-mesh controller: leadership lost; exiting so that a fresh process waits as a follower")
        return 1
    return 0


async def _serve_health(port: int) -> Any:
    """``/healthz`` on ``port`` for the whole process: followers are alive too (kopf's own liveness
    endpoint exists only while its operator runs, which a follower's does not)."""
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        elector = request.app.get("elector")
        role = "leader" if elector is None or elector.is_leader else "follower"
        return web.json_response({"status": "ok", "role": role})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # every address: the kubelet probes it
    return runner


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
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

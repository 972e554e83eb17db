"""Flags and environment of ``kserve-mesh controller`` (kube/controller/settings.py), and its one-line
errors (kube/controller/main.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kserve_mesh.kube.controller.main import main
from kserve_mesh.kube.controller.settings import ControllerSettings, InvalidControllerSettings


def test_defaults_are_cluster_scope_with_a_mesh_per_namespace() -> None:
    s = ControllerSettings.from_args([], {})
    assert not s.namespace_scope and s.namespace == ""
    assert s.mesh_address_for("team-a", "modelmesh-serving", 8033) == "modelmesh-serving.team-a:8033"
    assert s.controller_namespace == "default" and s.config_map == "model-serving-config"
    assert s.manage_deployments and s.health_port == 0 and s.kubeconfig is None


def test_environment_of_the_shipped_manifests() -> None:
    env = {"KSERVE_MESH_CONTROLLER_NAMESPACE": "kserve-mesh", "KSERVE_MESH_CONFIG_MAP": "cfg",
           "KSERVE_MESH_NAMESPACE_SCOPE": "false", "KSERVE_MESH_INSTANCE_IMAGE": "reg/mesh:1",
           "KSERVE_MESH_POD_NAME": "ctl-0", "KUBECONFIG": "/k"}
    s = ControllerSettings.from_args(["--health-port=8081"], env)
    assert (s.controller_namespace, s.config_map, s.instance_image) == ("kserve-mesh", "cfg", "reg/mesh:1")
    assert not s.namespace_scope and s.health_port == 8081 and s.kubeconfig == Path("/k")


def test_leader_election_is_off_unless_a_lease_is_named() -> None:
    s = ControllerSettings.from_args([], {})
    assert s.leader_election_lease == ""
    assert (s.lease_duration_s, s.lease_renew_deadline_s, s.lease_retry_s) == (15, 10, 2)
    s = ControllerSettings.from_args(["--lease-duration", "4", "--lease-renew-deadline", "3"], {
        "KSERVE_MESH_LEADER_ELECTION_LEASE": "kserve-mesh-controller-leader", "KSERVE_MESH_POD_NAME": "ctl-0"})
    assert s.leader_election_lease == "kserve-mesh-controller-leader"
    assert (s.lease_duration_s, s.lease_renew_deadline_s) == (4, 3)
    other = ControllerSettings.from_args([], {"KSERVE_MESH_POD_NAME": "ctl-0"})
    # The pod name, made unique (a restarted container is a new candidate).
    assert s.identity.startswith("ctl-0_") and other.identity.startswith("ctl-0_") and s.identity != other.identity


def test_namespace_scope_from_flag_or_environment() -> None:
    s = ControllerSettings.from_args(["--namespace-scope"], {"POD_NAMESPACE": "team-a"})
    assert s.namespace_scope and s.namespace == "team-a" and s.controller_namespace == "team-a"
    s = ControllerSettings.from_args([], {"KSERVE_MESH_NAMESPACE_SCOPE": "true", "POD_NAMESPACE": "b"})
    assert s.namespace_scope and s.namespace == "b"
    s = ControllerSettings.from_args(["--namespace", "c", "--mesh-address", "127.0.0.1:8033"], {})
    assert s.namespace_scope and s.namespace == "c"
    assert s.mesh_address_for("c", "x", 1) == "127.0.0.1:8033"


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--status-interval", "0"], {}, "--status-interval"),
    (["--health-port", "70000"], {}, "--health-port"),
    (["--mesh-address", "{cluster}:1"], {}, "--mesh-address"),
    (["--mesh-address", "meshonly"], {}, "host:port"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
    ([], {"KSERVE_MESH_NAMESPACE_SCOPE": "maybe"}, "KSERVE_MESH_NAMESPACE_SCOPE"),
    ([], {"KSERVE_MESH_HEALTH_PORT": "x"}, "KSERVE_MESH_HEALTH_PORT"),
    (["--leader-election-lease", "Not_A_Name"], {}, "--leader-election-lease must be a Lease name"),
    (["--lease-duration", "5", "--lease-renew-deadline", "5"], {}, "--lease-duration .* must be longer"),
    (["--lease-renew-deadline", "2", "--lease-retry-period", "2"], {}, "--lease-renew-deadline .* 1.2 x"),
    ([], {"KSERVE_MESH_LEASE_RETRY_PERIOD": "0"}, "--lease-retry-period must be > 0"),
])
def test_bad_settings_name_what_is_wrong(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidControllerSettings, match=message.replace("{", r"\{").replace("}", r"\}")):
        ControllerSettings.from_args(argv, env)


def test_main_reports_bad_flags_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--status-interval", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kserve-mesh controller: --status-interval") and "Traceback" not in err
    assert main(["--kubeconfig", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_cli_command_reaches_the_controller() -> None:
    proc = subprocess.run([sys.executable, "-m", "kserve_mesh.cli", "controller", "--bogus"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr and "Traceback" not in proc.stderr

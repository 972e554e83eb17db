"""Every image the manifests reference is the one this repository builds, pinned to the package
version (kserve-mesh:<kserve_mesh.__version__>, also the controller's default for the mesh container
and what the overlays' `images:` set), or a public upstream image with a registry and a pinned tag
(never latest, never untagged)."""

from __future__ import annotations

import re

import pytest
from manifests_checks import KUSTOMIZATIONS, MANIFESTS, containers_of, image_of_this_version, render

from kserve_mesh.kube.controller.deploy.config import ServingConfig

UPSTREAM = re.compile(r"^(docker\.io|quay\.io|ghcr\.io|registry\.k8s\.io|nvcr\.io)/[a-z0-9._/-]+:[A-Za-z0-9._-]+$")


def is_pinned_upstream(image: str) -> bool:
    match = UPSTREAM.match(image)
    return bool(match) and not image.endswith((":latest", ":main", ":master"))


def images(kustomization: str) -> set[str]:
    out = set()
    for obj in render(kustomization):
        for container in containers_of(obj):
            out.add(container["image"])
            out.update(e["value"] for e in container.get("env", []) if e["name"].endswith("_IMAGE") and "value" in e)
    return out


@pytest.mark.parametrize("kustomization", (*KUSTOMIZATIONS, "overlays/quickstart"))
def test_every_image_is_ours_at_this_version_or_a_pinned_upstream_one(kustomization: str) -> None:
    found = images(kustomization)
    assert image_of_this_version() in found
    for image in found - {image_of_this_version()}:
        assert is_pinned_upstream(image), f"{kustomization}: {image} is neither {image_of_this_version()} " \
                                          "nor a public upstream image with a pinned tag"


def test_the_checks_refuse_what_they_should() -> None:
    for bad in ("kserve-mesh:latest", "minio/minio", "quay.io/minio/minio", "quay.io/minio/minio:latest",
                "etcd:v3.5.21"):
        assert not is_pinned_upstream(bad), bad
    assert is_pinned_upstream("quay.io/coreos/etcd:v3.5.21")


def test_the_controller_default_and_every_images_entry_name_this_version() -> None:
    assert ServingConfig().image == image_of_this_version()
    tag = image_of_this_version().split(":")[1]
    for path in MANIFESTS.rglob("kustomization.yaml"):
        text = path.read_text()
        if "newName: kserve-mesh" in text:
            assert f'newTag: "{tag}"' in text, path
    assert "kserve-mesh:latest" not in "".join(p.read_text() for p in MANIFESTS.rglob("*.yaml"))

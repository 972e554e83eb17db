"""Fixtures of the image tests: the image built by scripts/build-image.sh once per session (cached
under build/image/<hash of its inputs>/), its OCI config, and its root filesystem as umoci unpacks it.

The build needs root (mmdebstrap --mode=root, chroot, mount), the Debian mirror and PyPI; running
it needs mount namespaces and umoci (scripts/test-deps.sh installs it). Without root or mount
namespaces the tests that need the image fail, saying why (CI has both); a build that fails fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from image_rootfs import (
    ARTIFACTS,
    IMAGE_DIR,
    BuiltImage,
    build_image,
    can_unshare,
    inputs_hash,
    record,
    unpack,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds the container image (root, minutes; -m 'not image' leaves them out)")


@pytest.fixture(scope="session")
def built_image() -> BuiltImage:
    if os.geteuid() != 0:
        pytest.fail("building the image needs root (mmdebstrap --mode=root, chroot, mount): run the suite as "
                    "root, as CI does, or leave these tests out with -m 'not image'")
    if not can_unshare():
        pytest.fail("no mount namespaces here (unshare --mount fails): the image can be neither built nor run; "
                    "leave these tests out with -m 'not image'")
    key = inputs_hash()
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    image = build_image(key, IMAGE_DIR / f"{key}.log")
    if image.built_now:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "build-info.json").write_text(json.dumps(image.info, indent=1) + "\n")
        record(cold_build_seconds=round(time.monotonic() - started, 1), build_steps_seconds=image.info["seconds"])
    img = image.info["image"]
    record(rootfs_bytes=image.info["rootfs_bytes"], venv_bytes=image.info["venv_bytes"],
           tarball_bytes=img["tarball_bytes"], layers_compressed_bytes=[x["compressed_bytes"] for x in img["layers"]])
    return image


@pytest.fixture(scope="session")
def image_config(built_image: BuiltImage) -> dict[str, Any]:
    """The image's OCI config (as the layout's first manifest names it)."""
    index = json.loads((built_image.layout / "index.json").read_text())
    blobs = built_image.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())


@pytest.fixture(scope="session")
def image_rootfs(built_image: BuiltImage) -> Path:
    """The image's root filesystem, unpacked from the OCI layout by umoci (not by our code)."""
    if shutil.which("umoci") is None:
        pytest.fail("umoci is not installed: run scripts/test-deps.sh (it installs it)")
    return unpack(built_image, built_image.info["version"])

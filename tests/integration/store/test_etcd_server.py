"""EtcdServer: a real local etcd that starts, restarts on the same port with its data, and cleans up."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from kserve_mesh.core.errors import FailedPrecondition, Unavailable
from kserve_mesh.store.etcd_server import EtcdServer, etcd_binary

pytestmark = pytest.mark.integration


def etcdctl(server: EtcdServer, *args: str) -> str:
    ctl = etcd_binary().with_name("etcdctl")
    done = subprocess.run(
        [str(ctl), f"--endpoints={server.endpoint}", "--command-timeout=5s", *args],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped by Popen.wait.
    return True


def test_starts_fast_restarts_on_the_same_port_and_keeps_data() -> None:
    with EtcdServer(unsafe_no_fsync=True) as server:
        assert server.running and server.pid is not None
        endpoint, first_pid = server.endpoint, server.pid
        etcdctl(server, "put", "k", "v1")
        started = time.monotonic()
        server.restart(down_s=0.5)
        assert time.monotonic() - started < 10
        assert server.endpoint == endpoint and server.pid != first_pid
        assert not alive(first_pid)
        assert etcdctl(server, "get", "k", "--print-value-only") == "v1"
        server.kill()  # a crash: SIGKILL
        assert not server.running
        server.start()
        assert etcdctl(server, "get", "k", "--print-value-only") == "v1"
        data_dir, pid = server.data_dir, server.pid
    assert pid is not None and not alive(pid)
    assert not data_dir.exists()  # a data dir it created itself is removed


def test_a_given_data_dir_is_kept(tmp_path: os.PathLike[str]) -> None:
    data = os.path.join(tmp_path, "etcd-data")
    with EtcdServer(data) as server:
        etcdctl(server, "put", "k", "kept")
    assert os.path.isdir(data)
    with EtcdServer(data) as again:  # new ports, same member data
        assert etcdctl(again, "get", "k", "--print-value-only") == "kept"


def test_a_taken_port_fails_start_with_the_etcd_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EtcdServer(client_port=taken.getsockname()[1])
        try:
            with pytest.raises(Unavailable, match="etcd exited during start-up") as caught:
                server.start(timeout_s=10)
            assert "address already in use" in str(caught.value)
            assert not server.running
        finally:
            server.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        server.start()

"""RuntimeSupervisor with a fake child process and a fake runtime client: an exit or two failed
health checks in a row (a hang) lose the runtime, a hung child is killed, the child restarts with
backoff doubling from 0.5 s, the client reconnects, readiness comes back; a remote runtime is lost
after failed checks and back after a good one. Every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from kserve_mesh.core.errors import Unavailable
from kserve_mesh.mesh.runtime_process import RuntimeSupervisor, describe_exit
from kserve_mesh.runtime.spi import RuntimeState, RuntimeStatus

READY = RuntimeStatus(RuntimeState.READY, 1 << 20, 1, 1000, 1 << 10)


class FakeProcess:
    """Duck-types RuntimeProcess: ``crash()`` ends it, ``kill()`` ends it with SIGKILL."""

    def __init__(self) -> None:
        self.starts = 0
        self.kills = 0
        self.fail_starts = 0  # how many of the next starts fail
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.proc = self
        self._pid = 100

    @property
    def pid(self) -> int:
        return 0 if self._exit.done() else self._pid

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def start(self, timeout_s: float = 60.0) -> str:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise Unavailable("the runtime process exited before it was ready (exit code 1)")
        self._exit = asyncio.get_running_loop().create_future()
        self._pid += 1
        return f"unix:/fake/{self.starts}"

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def crash(self, code: int = -9) -> None:
        if not self._exit.done():
            self._exit.set_result(code)

    def kill(self) -> None:
        self.kills += 1
        self.crash(-9)

    async def stop(self) -> None:
        self.crash(-15)


class FakeClient:
    def __init__(self) -> None:
        self.mode = "ok"  # ok | down | down-once | hung
        self.targets: list[str | None] = []
        self.checks = 0
        self.failed_once = asyncio.Event()

    async def runtime_status(self, *, timeout: float | None = None) -> RuntimeStatus:
        self.checks += 1
        if self.mode == "down-once":  # one failed check, then healthy again: no race with the test
            self.mode = "ok"
            self.failed_once.set()
            raise Unavailable("runtime at unix:/fake: runtimeStatus failed (UNAVAILABLE): connection refused")
        if self.mode == "down":
            raise Unavailable("runtime at unix:/fake: runtimeStatus failed (UNAVAILABLE): connection refused")
        if self.mode == "hung":
            await asyncio.sleep(3600)
        return READY

    async def reconnect(self, target: str | None = None) -> None:
        self.targets.append(target)


class Events:
    def __init__(self) -> None:
        self.lost: list[str] = []
        self.back: list[bool] = []
        self.changed = asyncio.Event()

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)
        self.changed.set()

    async def on_back(self, fresh: bool) -> None:
        self.back.append(fresh)
        self.changed.set()

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture()
async def parts() -> AsyncIterator[tuple[FakeProcess, FakeClient, Events, list[RuntimeSupervisor]]]:
    made: list[RuntimeSupervisor] = []
    try:
        yield FakeProcess(), FakeClient(), Events(), made
    finally:
        for sup in made:
            await sup.stop()


def _supervisor(parts, *, remote: bool = False, backoff_max_s: float = 4.0) -> RuntimeSupervisor:  # type: ignore[no-untyped-def]
    proc, client, events, made = parts
    sup = RuntimeSupervisor(client, None if remote else proc, on_lost=events.on_lost, on_back=events.on_back,
                            check_interval_s=0.05, check_timeout_s=0.1, backoff_max_s=backoff_max_s,
                            ready_timeout_s=2.0)
    made.append(sup)
    sup.start()
    return sup


async def test_an_exited_child_is_restarted_and_the_client_reconnects(parts, caplog) -> None:  # type: ignore[no-untyped-def]
    proc, client, events, _ = parts
    caplog.set_level(logging.WARNING, logger="kserve_mesh.mesh.runtime_process")
    sup = _supervisor(parts)
    await asyncio.sleep(0.1)
    assert events.lost == [] and client.checks >= 1

    proc.crash(-9)
    await events.wait_for(lambda: events.lost)
    assert "runtime restarting" in events.lost[0] and "pid 100" in events.lost[0]
    assert "killed by signal SIGKILL" in events.lost[0]
    assert sup.lost
    await events.wait_for(lambda: events.back)
    assert events.back == [True] and sup.restarts == 1 and not sup.lost
    assert proc.starts == 1 and client.targets == ["unix:/fake/1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("killed by signal SIGKILL" in m and "restarting it in 0.5 s" in m for m in warnings), warnings
    assert any("restarted (pid 101" in m for m in warnings), warnings


async def test_a_hung_child_is_killed_after_two_failed_checks(parts) -> None:  # type: ignore[no-untyped-def]
    proc, client, events, _ = parts
    _supervisor(parts)
    await asyncio.sleep(0.1)
    client.mode = "hung"
    await events.wait_for(lambda: events.lost)
    assert proc.kills == 1
    assert "was hung" in events.lost[0] and "runtimeStatus" in events.lost[0]
    client.mode = "ok"
    await events.wait_for(lambda: events.back)
    assert events.back == [True]


async def test_one_failed_check_is_not_a_hang(parts) -> None:  # type: ignore[no-untyped-def]
    proc, client, events, _ = parts
    _supervisor(parts)
    await asyncio.sleep(0.1)
    client.mode = "down-once"
    await asyncio.wait_for(client.failed_once.wait(), 10)
    checks = client.checks
    async with asyncio.timeout(10):
        while client.checks < checks + 3:  # three good checks after the failed one
            await asyncio.sleep(0.01)
    assert events.lost == [] and proc.kills == 0


async def test_restarts_back_off_doubling_up_to_the_maximum(parts, caplog) -> None:  # type: ignore[no-untyped-def]
    proc, _client, events, _ = parts
    caplog.set_level(logging.WARNING, logger="kserve_mesh.mesh.runtime_process")
    sup = _supervisor(parts, backoff_max_s=1.0)
    proc.fail_starts = 2
    proc.crash(1)
    await events.wait_for(lambda: events.back, timeout=10)
    waits = [r.getMessage().rsplit("restarting it in ", 1)[1] for r in caplog.records
             if "restarting it in" in r.getMessage()]
    assert waits == ["0.5 s", "1.0 s", "1.0 s"], waits
    assert "exit code 1" in events.lost[0]
    assert proc.starts == 3 and sup.restarts == 1 and len(events.lost) == 1


async def test_a_remote_runtime_is_lost_and_comes_back(parts) -> None:  # type: ignore[no-untyped-def]
    _proc, client, events, _ = parts
    sup = _supervisor(parts, remote=True)
    await asyncio.sleep(0.1)
    client.mode = "down"
    await events.wait_for(lambda: events.lost)
    assert events.lost[0].startswith("runtime unavailable") and sup.lost
    await asyncio.sleep(0.2)
    assert len(events.lost) == 1  # told once
    client.mode = "ok"
    await events.wait_for(lambda: events.back)
    assert events.back == [False] and not sup.lost and client.targets == []


def test_exit_descriptions() -> None:
    assert describe_exit(-9) == "killed by signal SIGKILL"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(None) == "still running"

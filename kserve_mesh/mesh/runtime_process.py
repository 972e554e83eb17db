"""The runtime a mesh instance drives over gRPC, watched: a child process it starts and restarts
(``--runtime process``), or a remote one it can only observe (``--runtime remote``).

The child is ``kserve-mesh runtime`` started with the instance's runtime settings (``args``, built
by the server from its settings). It listens on a Unix domain socket in a private folder (0700,
the socket itself 0600), never on a loopback TCP port: any local user can reach a loopback port,
and ``loadModel`` loads whatever path it is given. It stops when the instance dies, even by SIGKILL
(``--parent-pid``: the child sets ``PR_SET_PDEATHSIG`` itself, so no Python code runs between fork
and exec in this process full of gRPC threads).

``RuntimeSupervisor`` watches the runtime:

- **exit** of the child (any cause) is seen at once (the child's ``wait()``);
- **hang**: every ``check_interval_s`` it asks ``runtimeStatus`` with a deadline of
  ``check_timeout_s``; ``HANG_CHECKS`` failures in a row mean hung, and a hung child is killed
  (SIGKILL, which also ends a SIGSTOPped process);
- on either it logs a WARNING with the cause, calls ``on_lost`` (the instance drops every copy and
  is not ready), waits (0.5 s, doubling up to ``backoff_max_s``; back to 0.5 s once a child has
  served for ``stable_s``), starts a new child, points the client at it (``reconnect``), waits for
  READY and calls ``on_back``: models load again on demand;
- **recycle** (planned, ``recycle(reason)``; issue 16: the child holds memory no model accounts
  for): ``on_drain`` first (the instance starts no new load and lets requests in flight finish),
  then the child is stopped gracefully (SIGTERM), a new one started as above and ``on_back``
  called; ``on_lost`` is not called (requests wait for the new child instead of failing) unless
  the new child does not start;
- a remote runtime cannot be restarted: failing checks call ``on_lost``, the first good check
  after them ``on_back``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Protocol

from kserve_mesh.core.errors import MeshError, Unavailable
from kserve_mesh.runtime.spi import RuntimeState, RuntimeStatus

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
HANG_CHECKS = 2  # runtimeStatus failures in a row that make a runtime hung (or, remote, lost)
INITIAL_BACKOFF_S = 0.5
SOCKET_NAME = "runtime.sock"
LINK_SOCKET_NAME = "link.sock"  # the local link (runtime/local_link.py), beside the gRPC socket
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


class RuntimeProcess:
    """``kserve-mesh runtime`` as a child process, on a Unix socket in a private folder; with
    ``link``, it also serves inference over the local link on ``link_path`` in the same folder."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, *, link: bool = False) -> None:
        self.args = args  # flags of `kserve-mesh runtime` that carry the instance's settings
        self.env = env or {}  # added to the instance's environment (e.g. LD_PRELOAD of an allocator)
        self.link = link
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""
        self._dir: str | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The running child's process id, 0 when none runs."""
        proc = self.proc
        return proc.pid if proc is not None and proc.returncode is None else 0

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def _socket_path(self) -> str:
        if self._dir is None:
            folder = tempfile.mkdtemp(prefix="kserve-mesh-rt-")  # mode 0700
            if len(folder) + len(SOCKET_NAME) + 1 > _MAX_SOCKET_PATH:  # a long TMPDIR
                shutil.rmtree(folder, ignore_errors=True)
                folder = tempfile.mkdtemp(prefix="kserve-mesh-rt-", dir="/tmp")
            self._dir = folder
        os.chmod(self._dir, 0o700)
        return os.path.join(self._dir, SOCKET_NAME)

    @property
    def link_path(self) -> str:
        """The local link's socket (``link``): beside the gRPC one, in the same private folder."""
        return os.path.join(os.path.dirname(self._socket_path()), LINK_SOCKET_NAME)

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start a child and return the address it listens on (``unix:/path``)."""
        self.kill()  # a previous child that outlived its SIGKILL (it cannot serve this socket again)
        path = self._socket_path()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a child that was killed
        args = [sys.executable, "-m", "kserve_mesh.runtime.server", "--listen", f"unix:{path}",
                "--parent-pid", str(os.getpid()), *self.args]
        if self.link:
            args += ["--link", f"unix:{self.link_path}"]  # a stale socket there is replaced by the child
        env = {**os.environ, **self.env} if self.env else None
        self.proc = proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, env=env)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        code = await proc.wait()
                        raise Unavailable(f"the runtime process exited before it was ready ({describe_exit(code)})")
                    if "listening on" in line:
                        self.address = line.rsplit(" ", 1)[-1].strip()
                        break
        except TimeoutError:
            await self.stop()
            raise Unavailable(f"the runtime process did not start within {timeout_s:g} s") from None
        except BaseException:
            await self.stop()
            raise
        if self._drain is not None:  # the previous child's (it ends at that child's exit)
            self._drain.cancel()
        self._drain = asyncio.create_task(_drain(proc.stdout), name="runtime-stdout")
        return self.address

    async def wait(self) -> int:
        """Wait for the current child to exit; its exit code (negative: the signal that ended it)."""
        assert self.proc is not None
        return await self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the child: ends it even when it is stopped (SIGSTOP) or hung."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``) and wait for it."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
                proc.send_signal(signal.SIGCONT)  # a stopped child handles SIGTERM only once it runs
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.kill()
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
            self._drain = None

    def cleanup(self) -> None:
        """Remove the private socket folder (after ``stop``)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"  # return freed pages at once (default: after ~10 s)


def allocator_env(allocator: str) -> dict[str, str]:
    """The environment that makes a child use ``allocator`` (glibc: nothing to add). jemalloc is
    preloaded (``LD_PRELOAD``) and told to give freed pages back at once: measured by
    ``benchmarks/memory_churn.py``, that holds the runtime's RSS closest to its models' sizes."""
    if allocator == "glibc":
        return {}
    if allocator != "jemalloc":
        raise ValueError(f"unknown allocator {allocator!r} (glibc or jemalloc)")
    import ctypes.util

    found = [p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                         "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2") if os.path.exists(p)]
    lib = found[0] if found else ctypes.util.find_library("jemalloc")
    if not lib:
        raise Unavailable("runtime allocator jemalloc: libjemalloc is not installed (Debian/Ubuntu: apt-get "
                          "install libjemalloc2); use --runtime-allocator glibc")
    preload = " ".join(x for x in (os.environ.get("LD_PRELOAD", ""), lib) if x)
    return {"LD_PRELOAD": preload, "MALLOC_CONF": os.environ.get("MALLOC_CONF") or JEMALLOC_CONF}


def describe_exit(code: int | None) -> str:
    """``exit code 3`` / ``killed by signal SIGKILL``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


# -- supervision ---------------------------------------------------------------------------------
class SupervisedRuntime(Protocol):
    """What the supervisor needs of the runtime client (``GrpcRuntimeClient`` has it)."""

    async def runtime_status(self, *, timeout: float | None = None) -> RuntimeStatus: ...

    async def reconnect(self, target: str | None = None) -> None: ...


class RuntimeSupervisor:
    """Watches a runtime and, for a child process, restarts it (module docstring).

    ``on_lost(reason)`` is called once when the runtime is lost (it must not block),
    ``on_back(fresh)`` once it serves again (``fresh``: a new process holding no models).
    """

    def __init__(
        self,
        runtime: SupervisedRuntime,
        process: RuntimeProcess | None,
        *,
        on_lost: Callable[[str], None],
        on_back: Callable[[bool], Awaitable[None]],
        check_interval_s: float,
        check_timeout_s: float,
        backoff_max_s: float,
        stable_s: float | None = None,
        ready_timeout_s: float = START_TIMEOUT_S,
        on_drain: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.process = process
        self._on_lost = on_lost
        self._on_back = on_back
        self.check_interval_s = check_interval_s
        self.check_timeout_s = check_timeout_s
        self.backoff_max_s = max(INITIAL_BACKOFF_S, backoff_max_s)
        self.stable_s = stable_s if stable_s is not None else max(10.0, backoff_max_s)
        self.ready_timeout_s = ready_timeout_s
        self.restarts = 0
        self.recycles = 0
        self.lost = False
        self._task: asyncio.Task[None] | None = None
        self._on_drain = on_drain
        self._recycle_asked = asyncio.Event()
        self._recycle_reason = ""
        self._recycled: asyncio.Future[None] | None = None

    def start(self) -> None:
        run = self._supervise_process() if self.process is not None else self._supervise_remote()
        self._task = asyncio.create_task(run, name="runtime-supervisor")
        self._task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def recycle(self, reason: str) -> None:
        """A planned restart of the child (module docstring); returns once the new child serves.
        A remote runtime cannot be recycled (nothing happens)."""
        if self.process is None or self._task is None:
            return
        if self._recycled is None or self._recycled.done():
            self._recycled = asyncio.get_running_loop().create_future()
            self._recycle_reason = reason
            self._recycle_asked.set()
        await asyncio.shield(self._recycled)

    # -- checks ----------------------------------------------------------------------------------
    async def check(self) -> str:
        """One runtimeStatus with its deadline: "" when READY, else what was wrong."""
        try:
            status = await asyncio.wait_for(self.runtime.runtime_status(timeout=self.check_timeout_s),
                                            self.check_timeout_s)
        except TimeoutError:
            return f"no answer to runtimeStatus within {self.check_timeout_s:g} s"
        except MeshError as exc:
            return f"runtimeStatus failed: {exc}"
        except Exception as exc:  # any other failure is a failed check, not the end of supervision
            log.debug("runtimeStatus raised", exc_info=True)
            return f"runtimeStatus failed: {exc!r}"
        if status.state is not RuntimeState.READY:
            return f"runtimeStatus says {status.state.name}"
        return ""

    def _lose(self, reason: str) -> None:
        self.lost = True
        try:
            self._on_lost(reason)
        except Exception:  # the supervisor must go on restarting
            log.exception("the runtime-lost listener failed")

    async def _back(self, fresh: bool) -> None:
        try:
            await self._on_back(fresh)
        finally:
            self.lost = False

    # -- a child process -------------------------------------------------------------------------
    async def _supervise_process(self) -> None:
        proc = self.process
        assert proc is not None
        loop = asyncio.get_running_loop()
        backoff = INITIAL_BACKOFF_S
        while True:
            started = loop.time()
            pid = proc.pid
            cause, hung = await self._watch_child()
            planned = cause == "recycle"
            if loop.time() - started >= self.stable_s:
                backoff = INITIAL_BACKOFF_S  # it served a while: this is not a crash loop
            if planned:
                cause = f"was recycled ({self._recycle_reason})"
                if self._on_drain is not None:
                    await self._on_drain()
                await proc.stop()
                first_wait = 0.0
            else:
                # Lost before a hung child is killed: its calls in flight then fail as "runtime
                # restarting", not as whatever the closing socket says.
                self._lose(f"runtime restarting: the runtime process (pid {pid}) {cause}")
                if hung:
                    await self._kill()
                first_wait = backoff
            while True:
                if first_wait:
                    log.warning("the runtime process (pid %d) %s; restarting it in %.1f s", pid, cause, first_wait)
                    await asyncio.sleep(first_wait)
                    backoff = min(backoff * 2, self.backoff_max_s)
                else:
                    log.warning("the runtime process (pid %d) %s; restarting it", pid, cause)
                first_wait = backoff
                try:
                    address = await proc.start(self.ready_timeout_s)
                    await self.runtime.reconnect(address)
                    await self._wait_ready()
                    break
                except (MeshError, OSError) as exc:
                    pid = proc.proc.pid if proc.proc is not None else 0
                    cause = f"did not start: {exc}"
                    await proc.stop()
                    if not self.lost:  # a recycle whose new child fails: now it is lost
                        self._lose(f"runtime restarting: the runtime process {cause}")
            if planned:
                self.recycles += 1
            else:
                self.restarts += 1
            log.warning("the runtime process %s (pid %d, restart %d); models load again on demand",
                        "was recycled" if planned else "restarted", proc.pid, self.restarts + self.recycles)
            try:
                await self._back(True)
            finally:
                if planned and self._recycled is not None and not self._recycled.done():
                    self._recycled.set_result(None)

    async def _watch_child(self) -> tuple[str, bool]:
        """Until the child exits or hangs; returns what happened to it, and whether it hangs."""
        proc = self.process
        assert proc is not None
        exited = asyncio.ensure_future(proc.wait())
        recycle = asyncio.ensure_future(self._recycle_asked.wait())
        failures = 0
        try:
            while True:
                await asyncio.wait({exited, recycle}, timeout=self.check_interval_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    return f"exited ({describe_exit(exited.result())})", False
                if recycle.done():
                    self._recycle_asked.clear()
                    return "recycle", False
                problem = await self.check()
                if exited.done():
                    return f"exited ({describe_exit(exited.result())})", False
                if not problem:
                    failures = 0
                    continue
                failures += 1
                log.warning("the runtime process (pid %d) failed a health check (%d of %d): %s",
                            proc.pid, failures, HANG_CHECKS, problem)
                if failures >= HANG_CHECKS:
                    return f"was hung ({problem}, {HANG_CHECKS} times in a row) and was killed", True
        finally:
            exited.cancel()
            recycle.cancel()
            await asyncio.gather(exited, recycle, return_exceptions=True)

    async def _kill(self) -> None:
        """SIGKILL a hung child (also ends a stopped one) and wait for it, bounded."""
        proc = self.process
        assert proc is not None
        pid = proc.pid
        proc.kill()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("the runtime process (pid %d) did not end within %g s of SIGKILL", pid, STOP_TIMEOUT_S)

    async def _wait_ready(self) -> None:
        """Until a new child answers READY; ``Unavailable`` if it exits or takes too long."""
        proc = self.process
        assert proc is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + self.ready_timeout_s
        problem = ""
        while loop.time() < end:
            if proc.returncode is not None:
                raise Unavailable(f"it exited ({describe_exit(proc.returncode)})")
            problem = await self.check()
            if not problem:
                return
            await asyncio.sleep(0.1)
        raise Unavailable(f"it was not READY within {self.ready_timeout_s:g} s ({problem})")

    # -- a remote runtime ------------------------------------------------------------------------
    async def _supervise_remote(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.check_interval_s)
            problem = await self.check()
            if not problem:
                failures = 0
                if self.lost:
                    log.warning("the runtime answers again; models load again on demand")
                    await self._back(False)
                continue
            failures += 1
            if not self.lost:
                log.warning("the runtime failed a health check (%d of %d): %s", failures, HANG_CHECKS, problem)
                if failures >= HANG_CHECKS:
                    log.warning("the runtime is unavailable; this instance is not ready until it answers")
                    self._lose(f"runtime unavailable: {problem}")


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("runtime supervision stopped", exc_info=task.exception())

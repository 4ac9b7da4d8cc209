"""A real etcd process for tests: start it, crash it, freeze it, bring it back."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import anyio.to_thread

from ._checks import check_args, check_seconds
from ._errors import EtcdStartError, KitError, MissingEtcdError
from ._process import (
    HOST,
    Resources,
    find_etcd_binary,
    free_port,
    healthy,
    keep,
    reap,
    release,
    wait_stopped,
)

# A single member never holds an election after boot, so short raft timings
# only make startup faster (about 0.1 s instead of 0.6 s); tests never need fsync.
_FAST_FLAGS = (
    "--heartbeat-interval=10",
    "--election-timeout=100",
    "--snapshot-count=10000",
    "--auto-compaction-retention=0",
    "--unsafe-no-fsync",
    "--log-level=error",
)
_PORT_ATTEMPTS = 5
_PORT_RETRY_DELAY = 0.2
_POLL_INTERVAL = 0.01


class _PortBusyError(Exception):
    """etcd exited because one of its ports was still taken."""


class EtcdServer:
    """A single-member etcd on free loopback ports with a temporary data dir.

    Blocking methods have an ``a``-prefixed twin for async code that waits in a
    worker thread (`astart`, `arestart`, `aterminate`); `kill`, `pause`,
    `resume` and `stop` return within milliseconds and are safe anywhere. The
    process and both temporary directories are removed by `stop`, by leaving a
    ``with``/``async with`` block, when the handle is garbage collected, and at
    interpreter exit, whichever comes first; if this process is killed
    without running any of those (SIGKILL), a small shell process it started
    kills etcd and removes the directories. Not thread-safe.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if binary is not None and not isinstance(binary, str | os.PathLike):
            raise TypeError(f"binary must be a path or None, got {binary!r}")
        self._binary = os.fspath(binary) if binary is not None else None
        self._startup_timeout = check_seconds("startup_timeout", startup_timeout)
        self._extra_args = check_args("extra_args", extra_args)
        self._port: int | None = None
        self._peer_port: int | None = None
        self._paused = False
        self._log_start = 0
        self._resources = Resources()
        # weakref.finalize also runs at interpreter exit (its atexit flag), so a
        # Ctrl-C or a forgotten stop() leaves no process and no directory behind.
        self._finalizer = weakref.finalize(self, release, self._resources)

    @property
    def host(self) -> str:
        """The loopback address etcd listens on."""
        return HOST

    @property
    def port(self) -> int:
        """The client port; fixed at the first start, kept by restarts."""
        if self._port is None:
            raise KitError("etcd server was never started, so it has no port")
        return self._port

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL."""
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> str:
        """The data directory; removed by `stop`."""
        if self._resources.data_dir is None:
            raise KitError("etcd server has no data directory (not started)")
        return self._resources.data_dir

    @property
    def log_path(self) -> str:
        """The file etcd writes its log to; removed by `stop`."""
        if self._resources.log_dir is None:
            raise KitError("etcd server has no log file (not started)")
        return os.path.join(self._resources.log_dir, "etcd.log")

    @property
    def pid(self) -> int | None:
        """The process id while etcd runs, else None."""
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self.pid is not None

    @property
    def paused(self) -> bool:
        """True between `pause` and `resume`."""
        return self._paused and self.running

    def start(self) -> None:
        """Start etcd and return once it reports healthy."""
        if self.running:
            raise KitError("etcd server is already running")
        self._executable()
        fresh = self._resources.data_dir is None
        if fresh:
            self._resources.data_dir = tempfile.mkdtemp(prefix="aetcd-breaker-etcd-")
            self._resources.log_dir = tempfile.mkdtemp(prefix="aetcd-breaker-log-")
        if self._port is None:
            self._port, self._peer_port = free_port(), free_port()
        self._launch(new_ports_allowed=fresh)

    def restart(self) -> None:
        """Kill etcd if it runs, then start it on the same ports and data."""
        self.kill()
        if self._resources.data_dir is None:
            raise KitError("etcd server was stopped; call start() for a new one")
        self._launch(new_ports_allowed=False)

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop etcd gracefully with SIGTERM (SIGKILL after `timeout`)."""
        process = self._resources.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        if self._paused:
            process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            reap(process)
        keep(self._resources)
        self._paused = False

    def kill(self) -> None:
        """Crash etcd with SIGKILL and reap it; data stays for `restart`."""
        reap(self._resources.process)
        keep(self._resources)
        self._paused = False

    def pause(self) -> None:
        """Freeze etcd with SIGSTOP: connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)
        self._paused = True
        wait_stopped(self._resources.process, stopped=True)

    def resume(self) -> None:
        """Continue a paused etcd with SIGCONT."""
        self._signal(signal.SIGCONT)
        self._paused = False
        wait_stopped(self._resources.process, stopped=False)

    def stop(self) -> None:
        """Kill etcd and remove its data and log directories; idempotent."""
        release(self._resources)
        self._paused = False

    close = stop

    async def astart(self) -> None:
        """`start` for async code."""
        await anyio.to_thread.run_sync(self.start)

    async def arestart(self) -> None:
        """`restart` for async code."""
        await anyio.to_thread.run_sync(self.restart)

    async def aterminate(self, timeout: float = 10.0) -> None:
        """`terminate` for async code."""
        await anyio.to_thread.run_sync(self.terminate, timeout)

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines etcd logged."""
        return "\n".join(self._read_log(0).splitlines()[-lines:])

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        try:
            await self.astart()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Synchronous on purpose: a cancelled scope must still clean up.
        self.stop()

    def _command(self) -> list[str]:
        binary = self._executable()
        client = f"http://{HOST}:{self._port}"
        peer = f"http://{HOST}:{self._peer_port}"
        return [
            binary,
            "--name=default",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            *_FAST_FLAGS,
            *self._extra_args,
        ]

    def _read_log(self, start: int, limit: int = 8192) -> str:
        try:
            with open(self.log_path, "rb") as log:
                end = log.seek(0, os.SEEK_END)
                log.seek(max(start, end - limit))
                return log.read().decode(errors="replace")
        except (OSError, KitError):
            return ""

    def _executable(self) -> str:
        if self._binary is None:
            self._binary = find_etcd_binary()
        elif not os.access(self._binary, os.X_OK):
            raise MissingEtcdError([self._binary])
        return self._binary

    def _launch(self, *, new_ports_allowed: bool) -> None:
        deadline = time.monotonic() + self._startup_timeout
        if self._resources.log_file is None:
            self._resources.log_file = open(self.log_path, "ab")  # noqa: SIM115
        for _ in range(_PORT_ATTEMPTS):
            command = self._command()
            self._log_start = os.path.getsize(self.log_path)
            self._resources.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._resources.log_file,
                stderr=subprocess.STDOUT,
            )
            keep(self._resources)
            try:
                self._wait_healthy(self._resources.process, deadline)
                return
            except _PortBusyError:
                # A killed etcd's port can stay taken for a moment; a fresh
                # server may just as well move to other ports.
                if new_ports_allowed:
                    self._port, self._peer_port = free_port(), free_port()
                else:
                    time.sleep(_PORT_RETRY_DELAY)
        reason = f"ports {self._port}/{self._peer_port} stayed busy"
        raise EtcdStartError(reason, self._read_log(self._log_start))

    def _wait_healthy(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        while True:
            code = process.poll()
            if code is not None:
                tail = self._read_log(self._log_start)
                if "address already in use" in tail.lower():
                    raise _PortBusyError
                raise EtcdStartError(f"etcd exited with code {code}", tail)
            # Checked again after the probe: a foreign server on our port could
            # answer while this etcd is failing to bind.
            if healthy(HOST, self.port) and process.poll() is None:
                return
            if time.monotonic() > deadline:
                reap(process)
                reason = f"not healthy after {self._startup_timeout:g} s"
                raise EtcdStartError(reason, self._read_log(self._log_start))
            time.sleep(_POLL_INTERVAL)

    def _signal(self, signum: int) -> None:
        process = self._resources.process
        if process is None or process.poll() is not None:
            raise KitError("etcd server is not running")
        process.send_signal(signum)

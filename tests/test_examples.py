"""Every example runs as a user would run it, against its own embedded etcd."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.etcd

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def _run(name: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {"service_fallback.py", "session.py", "decorator.py"}


def test_service_example_falls_back_while_the_circuit_is_open() -> None:
    stdout, stderr = _run("service_fallback.py")
    out = stdout.splitlines()
    assert out[0] == "limit from etcd: 250"
    assert out[1].startswith("  circuit open (circuit 'config' is forced_open")
    assert out[2:] == ["limit while open: 100", "limit after reset: 250"]
    assert stderr.count("aetcd_breaker.state_changed") == 2
    assert "to_state=forced_open" in stderr
    assert "to_state=closed" in stderr


def test_session_example_reads_writes_and_closes() -> None:
    out, _ = _run("session.py")
    assert "/services/api/1 -> 10.0.0.1:8080" in out
    assert "/services/api/2 -> 10.0.0.2:8080" in out
    assert out.rstrip().endswith("breaker: closed")


def test_decorator_example_opens_after_two_failures() -> None:
    stdout, stderr = _run("decorator.py")
    out = stdout.splitlines()
    assert out[0] == "ada: b'Ada Lovelace'"
    assert out[1:3] == [
        "attempt 0: failed: ConnectionFailedError",
        "attempt 1: failed: ConnectionFailedError",
    ]
    assert len(out) == 5
    assert all(
        "rejected at once: circuit 'profile-store' is open" in line for line in out[3:5]
    )
    assert "reason=consecutive_failures" in stderr

"""The main job: ``python -m aetcd_breaker demo`` against a real embedded etcd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.etcd


def _gone(started: dict[str, object]) -> bool:
    """True when the etcd the demo started no longer runs and its data is gone."""
    pid = started["pid"]
    assert isinstance(pid, int)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        alive = False
    else:
        alive = True
    return not alive and not os.path.exists(str(started["data_dir"]))


def _demo(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aetcd_breaker", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_goes_through_every_fault_and_leaves_nothing_behind() -> None:
    done = _demo("--log-format", "json", "--phase-seconds", "1.5")
    assert done.returncode == 0, done.stderr[-3000:]

    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    changes = [e for e in events if e["event"] == "aetcd_breaker.state_changed"]
    summary = {e["phase"]: e for e in events if e["event"] == "demo.summary"}

    assert next(iter(summary)) == "healthy"
    assert len(summary) == 9
    assert summary["healthy"]["ok"] > 0
    assert summary["healthy"]["rejected"] == 0
    for fault in ("etcd crashed (SIGKILL)", "etcd hung (SIGSTOP)", "partitioned"):
        assert summary[fault]["rejected"] > 0, summary[fault]
    assert summary["etcd hung (SIGSTOP)"]["timed_out"] > 0
    assert {"closed", "open", "half_open"} <= {c["to_state"] for c in changes}
    assert all(c["breaker"] == "etcd" for c in changes)
    check = next(e for e in events if e["event"] == "demo.data_check")
    assert check == {**check, "canary_kept": True, "final_state": "closed"}
    started = next(e for e in events if e["event"] == "demo.etcd_started")
    assert _gone(started)


def test_demo_console_output_ends_with_the_phase_table() -> None:
    done = _demo("--fault", "crash", "--phase-seconds", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("phase "))
    table = lines[header:]
    assert table[0].split() == [
        "phase",
        "calls",
        "ok",
        "failed",
        "timeout",
        "rejected",
        "p50",
        "ms",
        "p99",
        "ms",
    ]
    assert [row.split()[0] for row in table[2:]] == ["healthy", "etcd", "restarted"]
    assert "aetcd_breaker.state_changed" in done.stdout


def test_demo_table_counts_every_call_even_with_short_phases() -> None:
    # Each call counts in the phase it started in. Every worker's first call
    # starts before the first 1 ms phase ends, and its next one 20 ms later:
    # the first phase holds exactly one call a worker (none went uncounted).
    done = _demo("--log-format", "json", "--phase-seconds", "0.001", "--workers", "4")
    assert done.returncode == 0, done.stderr[-3000:]

    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    summary = [e for e in events if e["event"] == "demo.summary"]

    assert summary[0]["phase"] == "healthy"
    assert summary[0]["calls"] == 4


@pytest.mark.parametrize(
    "args",
    [
        ["--fault", "flood"],
        ["--phase-seconds", "0"],
        ["--phase-seconds", "abc"],
        ["--workers", "-3"],
        ["--log-format", "xml"],
    ],
)
def test_demo_rejects_a_bad_option_with_a_usage_error(args: list[str]) -> None:
    done = _demo(*args, timeout=30)
    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert args[-1] in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_leaves_no_etcd_and_no_directory(signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aetcd_breaker", "demo", "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = json.loads(proc.stdout.readline())
    assert started["event"] == "demo.etcd_started"
    assert json.loads(proc.stdout.readline())["event"] == "demo.phase"
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 130
    assert _gone(started)

"""The public namespace, the layering of the package, and its static types."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

import aetcd_breaker

PACKAGE = pathlib.Path(aetcd_breaker.__file__).parent


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(aetcd_breaker.__all__) == [
        "BreakerClient",
        "BreakerError",
        "BreakerRegistry",
        "CallTimeoutError",
        "CircuitBreaker",
        "CircuitOpenError",
        "ClientClosedError",
        "Clock",
        "ConsecutiveFailures",
        "CountWindow",
        "Counts",
        "EtcdCallTimeoutError",
        "EtcdCircuitOpenError",
        "ExponentialBackoff",
        "FailureRate",
        "FakeClock",
        "FixedDuration",
        "Guard",
        "InvalidSettingError",
        "InvalidSettingTypeError",
        "LeaseLostError",
        "LockNotAcquiredError",
        "Metrics",
        "MonotonicClock",
        "Permit",
        "Retry",
        "SlowCallRate",
        "StaleCache",
        "State",
        "StateChange",
        "TimeWindow",
        "WatchCompactedError",
        "is_etcd_failure",
        "registry",
    ]
    for name in aetcd_breaker.__all__:
        assert getattr(aetcd_breaker, name) is not None


def test_every_library_error_derives_from_the_base_error() -> None:
    for name in aetcd_breaker.__all__:
        obj = getattr(aetcd_breaker, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aetcd_breaker.BreakerError), name


def test_state_values_are_the_documented_strings() -> None:
    assert [s.value for s in aetcd_breaker.State] == [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
    ]


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
    return found


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", ("aetcd", "grpc", "..etcd", "..testing", "..demo", "..cli")),
        ("etcd", ("..testing", "..demo", "..cli")),
    ],
)
def test_a_layer_imports_nothing_from_the_layers_above(
    layer: str, forbidden: tuple[str, ...]
) -> None:
    for path in (PACKAGE / layer).glob("*.py"):
        for name in _imports(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *args],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=600,
    )


def test_a_decorated_function_is_typed_as_a_coroutine_function(
    tmp_path: pathlib.Path,
) -> None:
    usage = tmp_path / "usage.py"
    usage.write_text(
        textwrap.dedent(
            """
            import asyncio

            from aetcd_breaker import CircuitBreaker

            breaker = CircuitBreaker()

            @breaker
            async def lookup(key: str) -> int:
                return 0

            class Store:
                @breaker
                async def get(self, key: str) -> str:
                    return key

            async def main() -> None:
                task = asyncio.create_task(lookup("k"))
                reveal_type(await task)
                reveal_type(await Store().get("k"))

            asyncio.run(lookup("k"))
            """
        )
    )
    done = _mypy("--strict", str(usage))
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert 'Revealed type is "int"' in lines[0]
    assert 'Revealed type is "str"' in lines[1]


def test_the_package_passes_strict_mypy() -> None:
    done = _mypy("--strict", "aetcd_breaker")
    assert done.returncode == 0, done.stdout[-4000:]


def test_guarded_calls_keep_the_wrapped_function_types(tmp_path: pathlib.Path) -> None:
    usage = tmp_path / "usage.py"
    usage.write_text(
        textwrap.dedent(
            """
            from aetcd_breaker import CircuitBreaker

            breaker = CircuitBreaker()

            async def lookup(key: str, *, default: int = 0) -> int:
                return default

            decorated = breaker(lookup)

            async def main() -> None:
                a: int = await breaker.call(lookup, "k", default=1)
                b: int = await decorated("k")
                reveal_type(a)
                reveal_type(b)
                await breaker.call(lookup, 42)
                await decorated("k", default="x")
            """
        )
    )
    done = _mypy("--strict", str(usage))
    lines = done.stdout.splitlines()
    assert sum('Revealed type is "int"' in line for line in lines) == 2
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 2, done.stdout
    assert 'Argument 2 to "call"' in errors[0]
    assert 'has incompatible type "int"; expected "str"' in errors[0]
    assert 'Argument "default" has incompatible type "str"' in errors[1]

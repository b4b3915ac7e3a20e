"""The chaos harness (bench/chaos.py) in its short form, plus the observer's own guarantees.

The short run starts its own broker, emulator and workers, runs ~40 s of chaos and fails on
any violation in a gating category (bench/chaos.py says which and why), printing the
harness's whole output. A cluster that cannot start fails the test (exit status 2), never
skips. The observer (bench/chaos_observer.py) must be a pure client of Layer: its imports
are checked here, and its checks are tried on small hand-made records.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from chaos_observer import (  # noqa: E402
    FAULT_MARKER,
    Bounds,
    ChaosWindow,
    Exchange,
    ProbeCycle,
    Record,
    StabilityEvent,
    Write,
    check_false_stable,
    check_missing_event,
    check_watermark_lag,
    check_watermark_regression,
    classify_5xx,
    liveness_deadline,
)

OBSERVER = ROOT / "bench" / "chaos_observer.py"
#: What the observer may import besides the standard library: the clients any application has.
CLIENT_LIBRARIES = {"httpx", "aiokafka"}
#: Setup (~10 s) + 40 s of chaos + actions in flight + settle, with room for a slow machine.
RUN_TIMEOUT_S = 420


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"relative import in {path.name}"
            modules.add(node.module.split(".")[0])
    return modules


def test_observer_imports_only_the_standard_library_httpx_and_aiokafka() -> None:
    foreign = _imported_modules(OBSERVER) - set(sys.stdlib_module_names) - CLIENT_LIBRARIES
    assert not foreign, f"the observer must not import Layer or other libraries: {foreign}"


def _answer(worker: str, sent: int, received: int, stable: bool, as_of: int | None) -> Exchange:
    return Exchange("read", "ns", worker, "probe", sent, received, 200, is_stable=stable,
                    stable_as_of=as_of, last_write_ms=None)  # fmt: skip


def test_regression_compares_with_answers_received_before_the_request_was_sent() -> None:
    record = Record(origin_ms=0)
    record.exchanges = [
        _answer("w1", 0, 10, True, 500),
        _answer("w2", 5, 20, True, 400),  # sent before the 500 was received: not a regression
        _answer("w2", 30, 40, True, 450),  # sent after: a regression
        _answer("w1", 50, 60, False, None),  # null after a value: a regression
    ]
    found = check_watermark_regression(record)
    assert [(v.worker, v.at_ms) for v in found] == [("w2", 40), ("w1", 60)]


def test_watermark_lag_gates_beyond_the_margin_and_at_the_end_only() -> None:
    bounds = Bounds(fast_poll_ms=300, index_delay_ms=300, safety_margin_ms=200,
                    poll_max_backoff_ms=2000)  # fmt: skip
    record = Record(origin_ms=0)
    record.live_at_end = {"w1"}

    def stable(sent: int, as_of: int, last_write: int, purpose: str = "probe") -> Exchange:
        return Exchange("read", "ns", "w1", purpose, sent, sent + 5, 200, is_stable=True,
                        stable_as_of=as_of, last_write_ms=last_write)  # fmt: skip

    record.exchanges = [
        stable(0, 1000, 1100),  # 100 ms behind: within the margin
        stable(10, 1000, 1300),  # 300 ms behind: beyond it
        stable(20, 1300, 1300, purpose="settle"),  # caught up at the end
    ]
    kinds = sorted(v.category for v in check_watermark_lag(record, bounds))
    assert kinds == ["watermark_lag", "watermark_lag", "watermark_lag_beyond_margin"]
    record.exchanges.append(stable(30, 1300, 1400, purpose="settle"))  # left behind
    assert "watermark_lag_at_end" in {v.category for v in check_watermark_lag(record, bounds)}


def test_false_stable_counts_only_answers_inside_the_known_unindexed_window() -> None:
    record = Record(origin_ms=0)
    write = Write("ns", "direct", sent_ms=100, ack_ms=110, notified_ms=120)
    record.writes = [write]
    record.probes = [ProbeCycle("ns", paused_ms=90, write=write, resume_sent_ms=2000)]
    record.chaos = [ChaosWindow("broker_stall", "broker", 300, 350)]
    record.exchanges = [
        _answer("w1", 105, 115, True, 50),  # sent before the ack: not judged
        _answer("w1", 115, 125, True, 50),  # notification not yet acknowledged when sent
        _answer("w1", 200, 210, True, 50),  # general
        _answer("w2", 1200, 1300, True, 50),  # within 1 s after SIGCONT
        _answer("w1", 1950, 2050, True, 50),  # received after resume was requested: not judged
        _answer("w2", 210, 220, False, 50),
    ]
    found = [(v.category, v.at_ms) for v in check_false_stable(record)]
    assert sorted(found) == [
        ("false_stable", 210),
        ("false_stable_broker_stalled", 1300),
        ("false_stable_direct_unnotified", 125),
    ]


def test_missing_event_is_a_flip_to_stable_without_an_event_at_or_above_its_watermark() -> None:
    record = Record(origin_ms=0)
    record.exchanges = [
        _answer("w1", 0, 10, False, None),
        _answer("w2", 20, 30, True, 100),  # flip, matched by the event at 120
        _answer("w1", 40, 50, False, 100),
        _answer("w1", 60, 70, True, 200),  # flip, no event >= 200
        _answer("w2", 80, 90, True, 210),  # not a flip
    ]
    record.events = [StabilityEvent("ns", "became_stable", True, 120, 25, 26)]
    assert [v.at_ms for v in check_missing_event(record)] == [70]


def test_liveness_deadline_is_extended_by_the_chaos_overlapping_the_wait() -> None:
    bounds = Bounds(fast_poll_ms=300, index_delay_ms=300, safety_margin_ms=200,
                    poll_max_backoff_ms=2000)  # fmt: skip
    record = Record(origin_ms=0, settle_ended_ms=100_000)
    assert liveness_deadline(record, bounds, 10_000) == 10_000 + 2800
    record.chaos = [
        ChaosWindow("broker_stall", "broker", 9_000, 11_000),  # 1 s of it after the start
        ChaosWindow("kill_restart", "w1", 20_000, 24_000),  # after the (extended) deadline
    ]
    assert liveness_deadline(record, bounds, 10_000) == 10_000 + 2800 + 1000 + 3000


def test_5xx_is_layers_unless_not_ready_or_upstreams() -> None:
    record = Record(origin_ms=0)
    record.chaos = [ChaosWindow("upstream_500", "emulator", 1000, 2000)]

    def status(code: int, error: str = "x", retry_after: str | None = None, at: int = 0) -> str:
        exchange = Exchange("read", "ns", "w1", "probe", at, at + 5, code, error=error,
                            retry_after=retry_after)  # fmt: skip
        return classify_5xx(record, exchange)

    assert status(503, retry_after="1") == "not_ready"
    assert status(503) == "layer"
    assert status(500, error=f"{FAULT_MARKER}-3") == "upstream"
    assert status(500, error="internal error", at=1500) == "layer"
    assert status(502, at=1500) == "upstream"
    assert status(502, at=5000) == "layer"


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_chaos_short_run_has_no_gating_violation(tmp_path: Path) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "chaos.py"), "--duration", "40", "--short",
            "--run-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    print(result.stdout)
    print(result.stderr[-5000:], file=sys.stderr)
    assert result.returncode == 0, (
        f"chaos harness exited with {result.returncode} (1: gating violations, 2: the cluster "
        f"did not start); its output:\n{result.stdout[-30000:]}\n{result.stderr[-3000:]}"
    )

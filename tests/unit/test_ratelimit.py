"""TokenBucket on an injected clock: bursts, refill, waits and upstream-requested pauses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layer.ratelimit as ratelimit_module
from layer.ratelimit import TokenBucket


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def take(bucket: TokenBucket, n: int) -> list[float]:
    return [bucket.try_acquire() for _ in range(n)]


@pytest.mark.parametrize(
    ("rate", "burst", "expected_burst"),
    [(10.0, None, 10.0), (0.5, None, 1.0), (10.0, 3.0, 3.0), (1.0, None, 1.0)],
    ids=["defaults-to-rate", "slow-rate-still-allows-one", "explicit", "one-per-second"],
)
def test_burst_defaults_to_the_rate_but_at_least_one(
    clock: FakeClock, rate: float, burst: float | None, expected_burst: float
) -> None:
    assert TokenBucket(rate, burst=burst, clock=clock).burst == expected_burst


def test_full_bucket_hands_out_its_burst_at_once(clock: FakeClock) -> None:
    bucket = TokenBucket(5.0, clock=clock)
    assert take(bucket, 5) == [0.0] * 5


def test_empty_bucket_says_how_long_to_wait_for_the_next_token(clock: FakeClock) -> None:
    bucket = TokenBucket(4.0, clock=clock)
    take(bucket, 4)
    assert bucket.try_acquire() == pytest.approx(0.25)


def test_waiting_does_not_take_a_token(clock: FakeClock) -> None:
    bucket = TokenBucket(4.0, clock=clock)
    take(bucket, 4)
    assert bucket.try_acquire() == pytest.approx(0.25)
    assert bucket.try_acquire() == pytest.approx(0.25), "asking again costs nothing"


def test_tokens_refill_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(4.0, clock=clock)
    take(bucket, 4)
    clock.advance(0.25)
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() > 0.0


def test_partial_refill_shortens_the_wait(clock: FakeClock) -> None:
    bucket = TokenBucket(4.0, clock=clock)
    take(bucket, 4)
    clock.advance(0.1)
    assert bucket.try_acquire() == pytest.approx(0.15)


def test_refill_never_exceeds_the_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(10.0, burst=2.0, clock=clock)
    clock.advance(3_600)
    assert take(bucket, 3)[:2] == [0.0, 0.0]
    assert bucket.try_acquire() > 0.0


def test_pause_hands_out_nothing_until_it_ends(clock: FakeClock) -> None:
    bucket = TokenBucket(10.0, clock=clock)
    bucket.pause(2.0)
    assert bucket.try_acquire() == pytest.approx(2.0)
    clock.advance(1.5)
    assert bucket.try_acquire() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.try_acquire() == 0.0


def test_shorter_pause_does_not_cut_a_longer_one(clock: FakeClock) -> None:
    bucket = TokenBucket(10.0, clock=clock)
    bucket.pause(5.0)
    bucket.pause(1.0)
    assert bucket.try_acquire() == pytest.approx(5.0)


def test_longer_pause_extends_a_shorter_one(clock: FakeClock) -> None:
    bucket = TokenBucket(10.0, clock=clock)
    bucket.pause(1.0)
    clock.advance(0.5)
    bucket.pause(3.0)
    assert bucket.try_acquire() == pytest.approx(3.0)


async def test_acquire_sleeps_exactly_until_a_token_is_there(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr(ratelimit_module.asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(2.0, clock=clock)
    for _ in range(4):
        await bucket.acquire()
    assert sleeps == [pytest.approx(0.5), pytest.approx(0.5)]


async def test_acquire_waits_out_a_pause(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr(ratelimit_module.asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(2.0, clock=clock)
    bucket.pause(1.5)
    await bucket.acquire()
    assert sum(sleeps) == pytest.approx(1.5)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1_000.0),
    burst=st.one_of(st.none(), st.floats(min_value=1.0, max_value=100.0)),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), max_size=60),
)
def test_acquisitions_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: float | None, gaps: list[float]
) -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate, burst=burst, clock=clock)
    granted = 0
    for gap in gaps:
        clock.advance(gap)
        wait = bucket.try_acquire()
        assert wait >= 0.0
        if wait == 0.0:
            granted += 1
        else:
            assert wait <= 1.0 / rate + 1e-9, "never wait longer than one token's refill"
        assert granted <= bucket.burst + rate * clock.now + 1e-6

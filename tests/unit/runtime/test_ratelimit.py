import pytest

from kokpit.runtime.ratelimit import ExponentialBackoff, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=10, burst=3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2), "callers queue up in arrival order"
    clock.now += 10  # refills, but never beyond the burst
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() > 0


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="qps"):
        TokenBucket(qps=0, burst=1)


def test_backoff_doubles_per_key_up_to_the_cap() -> None:
    backoff = ExponentialBackoff(base=0.005, cap=0.04)
    assert [backoff.when("a") for _ in range(5)] == [0.005, 0.01, 0.02, 0.04, 0.04]
    assert backoff.when("b") == 0.005, "keys back off independently"
    assert backoff.failures("a") == 5
    backoff.forget("a")
    assert backoff.when("a") == 0.005

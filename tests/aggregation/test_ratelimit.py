import pytest

from aggregation.ratelimit import RateLimiter


def test_burst_is_granted_then_refused_with_the_wait():
    limiter = RateLimiter(rate=10, burst=20)

    assert limiter.take(1, 20, now=100.0) == 0.0
    assert limiter.take(1, 5, now=100.0) == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate_up_to_the_burst():
    limiter = RateLimiter(rate=10, burst=20)
    limiter.take(1, 20, now=0.0)

    assert limiter.take(1, 10, now=1.0) == 0.0
    assert limiter.take(1, 1, now=1.0) == pytest.approx(0.1)
    assert limiter.take(1, 20, now=100.0) == 0.0  # refilled to the burst, not beyond
    assert limiter.take(1, 1, now=100.0) == pytest.approx(0.1)


def test_clients_have_their_own_buckets():
    limiter = RateLimiter(rate=1, burst=1)
    limiter.take(1, 1, now=0.0)

    assert limiter.take(2, 1, now=0.0) == 0.0
    assert limiter.take(1, 1, now=0.0) == pytest.approx(1.0)


def test_forgets_every_bucket_past_its_key_limit():
    limiter = RateLimiter(rate=1, burst=1, max_keys=2)
    limiter.take(1, 1, now=0.0)
    limiter.take(2, 1, now=0.0)

    limiter.take(3, 1, now=0.0)

    assert limiter.take(1, 1, now=0.0) == 0.0  # a fresh bucket: the old ones were dropped

import aiohttp
import pytest

from kokpit.runtime import errors
from kokpit.runtime.client import RetryPolicy, parse_watch_line


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (404, "NotFound", errors.NotFound),
        (409, "Conflict", errors.Conflict),
        (409, "AlreadyExists", errors.AlreadyExists),
        (410, "Expired", errors.Gone),
        (422, "Invalid", errors.Invalid),
        (429, "TooManyRequests", errors.TooManyRequests),
        (503, "ServiceUnavailable", errors.ServerError),
        (418, "", errors.ApiError),
    ],
)
def test_status_codes_map_to_types(code: int, reason: str, expected: type) -> None:
    err = errors.from_response(code, {"kind": "Status", "reason": reason, "message": "m"})
    assert type(err) is expected
    assert err.code == code
    assert err.message == "m"


def test_a_body_that_is_not_a_status_still_gives_a_message() -> None:
    err = errors.from_response(502, None, fallback="bad gateway")
    assert isinstance(err, errors.ServerError)
    assert str(err) == "bad gateway"


def test_watch_error_event_raises_gone() -> None:
    line = b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}'
    with pytest.raises(errors.Gone, match="too old"):
        parse_watch_line(line)
    event = parse_watch_line(b'{"type":"ADDED","object":{"metadata":{"name":"x"}}}')
    assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "x")


POLICY = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=1.0, default_retry_after=0.7)
THROTTLED = errors.TooManyRequests("slow down", retry_after=3.0)
UNAVAILABLE = errors.ServerError("unavailable", code=503)


@pytest.mark.parametrize(
    ("method", "error", "attempt", "apply", "delay"),
    [
        ("POST", THROTTLED, 0, False, 3.0),  # 429: any verb, after Retry-After
        ("GET", errors.TooManyRequests("x"), 0, False, 0.7),  # no header: the default
        ("GET", UNAVAILABLE, 0, False, 0.1),  # 5xx on a repeatable verb: backoff
        ("GET", UNAVAILABLE, 2, False, 0.4),
        ("PATCH", UNAVAILABLE, 0, True, 0.1),  # server-side apply is repeatable
        ("POST", UNAVAILABLE, 0, False, None),  # a create may have happened: do not repeat
        ("PATCH", UNAVAILABLE, 0, False, None),
        ("GET", errors.NotFound("x"), 0, False, None),  # an answer, not a failure
        ("GET", UNAVAILABLE, 3, False, None),  # attempts used up
    ],
)
def test_retry_policy(
    method: str, error: BaseException, attempt: int, apply: bool, delay: float | None
) -> None:
    got = POLICY.delay(method, error, attempt, apply=apply)
    assert got == (pytest.approx(delay) if delay is not None else None)


def test_a_connection_never_made_is_retried_for_any_verb() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, False, None, None, None)
    refused = aiohttp.ClientConnectorError(key, OSError(111, "refused"))
    assert POLICY.delay("POST", refused, 0, apply=False) == pytest.approx(0.1)

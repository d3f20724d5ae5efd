"""The analysis provider: the condition language (table-driven), the reduction of Prometheus
answers to one number (against a small HTTP server on loopback playing Prometheus' API), and
measurements with Argo Rollouts' semantics."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kokpit.providers import analysis
from kokpit.providers.analysis import (
    CONDITION_PATTERN,
    AnalysisError,
    ConditionError,
    Measurement,
    PrometheusClient,
    PrometheusOptions,
    evaluate,
    measure,
    parse,
)

# -- the condition language ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "result", "holds"),
    [
        ("result >= 0.95", 0.95, True),
        ("result >= 0.95", 0.9499, False),
        ("result > 0.95", 0.95, False),
        ("result < 2.5", 2.4, True),
        ("result < 2.5", 2.5, False),
        ("result <= 2.5", 2.5, True),
        ("result == 1", 1.0, True),
        ("result != 1", 1.0, False),
        ("result != 1", 0.0, True),
        ("result>=1e-3", 0.002, True),
        ("result > -1", -0.5, True),
        ("  result  >=  0.9  ", 0.95, True),
        ("result >= 0.9 && result <= 1", 0.95, True),
        ("result >= 0.9 && result <= 1", 1.5, False),
        ("result < 0.1 || result > 10", 11, True),
        ("result < 0.1 || result > 10", 5, False),
        # && binds tighter than ||: (r < 0) || (r > 1 && r < 2)
        ("result < 0 || result > 1 && result < 2", 1.5, True),
        ("result < 0 || result > 1 && result < 2", 3, False),
        ("result < 0 || result > 1 && result < 2", -1, True),
        # NaN passes no comparison, not even !=
        ("result != 1", float("nan"), False),
        ("result >= 0", float("nan"), False),
        ("result < 1", float("-inf"), True),
    ],
)
def test_conditions(condition: str, result: float, holds: bool) -> None:
    assert re.fullmatch(CONDITION_PATTERN, condition)
    assert evaluate(condition, result) is holds


@pytest.mark.parametrize(
    "condition",
    [
        "",
        "result",
        "result >= ",
        ">= 0.95",
        "0.95 <= result",
        "result => 0.95",
        "result >= 0.95 &&",
        "result >= 0.95 & result < 1",
        "result >= 0.95 and result < 1",
        "(result >= 0.95)",
        "result[0] >= 0.95",
        "result >= 0.95; import os",
        "__import__('os').system('true')",
        "result >= 0x10",
        "result >= .5",
        "result >= 1.",
        "result >= inf",
        "result >= nan",
        "Result >= 1",
        "result >= 1\n",
        "result\t>= 1",
        "result >= 1" + " && result >= 1" * 30,
        "result >= 1e999",
    ],
)
def test_malformed_conditions_are_refused_with_a_clear_message(condition: str) -> None:
    with pytest.raises(ConditionError) as refused:
        parse(condition)
    message = str(refused.value)
    assert "result" in message or "number" in message or "characters" in message
    if len(condition) <= 256 and "e999" not in condition:
        # The API server's check refuses the same ones (anchored pattern, RE2 syntax).
        assert re.fullmatch(CONDITION_PATTERN, condition) is None


def test_the_pattern_is_anchored_and_uses_no_python_only_syntax() -> None:
    """CEL's matches() finds a match anywhere (RE2): only anchors make it a whole-string
    check; RE2 has no lookarounds, backreferences or possessive quantifiers, and its \\s
    differs from Python's. No backslash: it goes into a CEL string literal as it is."""
    assert CONDITION_PATTERN.startswith("^")
    assert CONDITION_PATTERN.endswith("$")
    for construct in ("(?=", "(?!", "(?<", "*+", "++", "\\"):
        assert construct not in CONDITION_PATTERN
    assert re.search(CONDITION_PATTERN, "x result >= 1") is None


def test_the_public_surface() -> None:
    assert sorted(analysis.__all__) == sorted(
        [
            "CONDITION_PATTERN",
            "AnalysisError",
            "Condition",
            "ConditionError",
            "Measurement",
            "MetricSource",
            "Phase",
            "PrometheusClient",
            "PrometheusOptions",
            "PrometheusReader",
            "evaluate",
            "measure",
            "parse",
        ]
    )


# -- Prometheus answers ----------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Start = Callable[[Handler], Awaitable[PrometheusClient]]


@pytest.fixture
async def prometheus() -> AsyncIterator[Start]:
    """Start a loopback HTTP server answering /api/v1/query with a handler; returns a client
    for it (several per test are fine)."""
    servers: list[TestServer] = []
    clients: list[PrometheusClient] = []

    async def start(handler: Handler) -> PrometheusClient:
        app = web.Application()
        app.router.add_get("/api/v1/query", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = PrometheusClient(f"http://127.0.0.1:{server.port}", PrometheusOptions(timeout=1.0))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for server in servers:
        await server.close()


def answer(document: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, text=json.dumps(document), content_type="application/json"
        )

    return handler


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [1.7e9, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


QUERY = 'sum(rate(kokpit_probe_pod_creations_total{result="success"}[1m]))'


@pytest.mark.parametrize(
    ("document", "value"),
    [
        (vector("0.97"), 0.97),
        (vector("+Inf"), float("inf")),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "2.5"]}}, 2.5),
    ],
)
async def test_one_number_is_the_value(prometheus: Start, document: Any, value: float) -> None:
    client = await prometheus(answer(document))
    assert await client.query(QUERY) == value


async def test_the_query_is_sent_as_given(prometheus: Start) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.query["query"])
        return await answer(vector("1"))(request)

    client = await prometheus(handler)
    await client.query(QUERY)
    assert seen == [QUERY]


@pytest.mark.parametrize(
    ("document", "status", "says"),
    [
        (vector(), 200, "returned no data"),
        (vector("1", "2"), 200, "returned 2 series, not one"),
        (vector("NaN"), 200, "returned NaN"),
        (vector("many"), 200, "not a number"),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            200,
            "returned a matrix result",
        ),
        (
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
            400,
            "Prometheus refused query",
        ),
        ({"status": "success", "data": {}}, 503, "HTTP 503"),
        ("<html>gateway</html>", 502, "HTTP 502 and no Prometheus result"),
    ],
)
async def test_anything_but_one_number_is_an_analysis_error(
    prometheus: Start, document: Any, status: int, says: str
) -> None:
    client = await prometheus(answer(document, status))
    with pytest.raises(AnalysisError) as failed:
        await client.query(QUERY)
    assert says in str(failed.value)
    assert repr(QUERY) in str(failed.value)


async def test_a_server_that_does_not_answer_in_time_is_an_analysis_error(
    prometheus: Start,
) -> None:
    import asyncio

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="{}")

    client = await prometheus(slow)
    with pytest.raises(AnalysisError, match=r"did not answer query .* within 1 s"):
        await client.query(QUERY)


async def test_a_server_that_is_down_is_an_analysis_error() -> None:
    from kokpit.local.nodes import free_port

    async with PrometheusClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(AnalysisError, match=r"cannot reach Prometheus at http://127\.0\.0\.1:"):
            await client.query(QUERY)


@pytest.mark.parametrize(
    "url", ["ftp://prometheus:9090", "prometheus:9090", "http://", "https://user:secret@p:9090"]
)
def test_unusable_urls_are_refused_without_quoting_credentials(url: str) -> None:
    with pytest.raises(AnalysisError) as refused:
        PrometheusClient(url)
    assert "secret" not in str(refused.value)


def test_a_ca_bundle_that_is_not_pem_is_refused() -> None:
    with pytest.raises(AnalysisError, match="not PEM"):
        PrometheusClient("https://p:9090", PrometheusOptions(ca_data=b"not a certificate"))


# -- measurements ----------------------------------------------------------------------------


class Fixed:
    """A metric source that answers one value, or raises."""

    def __init__(self, value: float | AnalysisError) -> None:
        self.value = value
        self.queries: list[str] = []

    async def query(self, promql: str) -> float:
        self.queries.append(promql)
        if isinstance(self.value, AnalysisError):
            raise self.value
        return self.value


@pytest.mark.parametrize(
    ("value", "success", "failure", "phase"),
    [
        (0.99, "result >= 0.95", None, "Successful"),
        (0.90, "result >= 0.95", None, "Failed"),
        (0.90, None, "result < 0.5", "Successful"),
        (0.40, None, "result < 0.5", "Failed"),
        # failure is checked first: a value both good and bad is bad
        (0.40, "result >= 0", "result < 0.5", "Failed"),
        (0.99, "result >= 0.95", "result < 0.5", "Successful"),
        # neither met: the success condition is not, so Failed
        (0.70, "result >= 0.95", "result < 0.5", "Failed"),
        (0.70, None, None, "Successful"),
    ],
)
async def test_measurements_follow_argo_rollouts(
    value: float, success: str | None, failure: str | None, phase: str
) -> None:
    source = Fixed(value)
    measurement = await measure(source, QUERY, success, failure)
    assert measurement.phase == phase
    assert measurement.value == value
    assert source.queries == [QUERY]


async def test_a_query_error_is_an_error_measurement_with_its_message() -> None:
    error = AnalysisError("cannot reach Prometheus at http://p:9090 for query 'up'")
    measurement = await measure(Fixed(error), "up", "result >= 1")
    assert measurement == Measurement("Error", None, str(error))


async def test_a_malformed_condition_is_an_error_measurement_and_no_query() -> None:
    source = Fixed(1.0)
    measurement = await measure(source, "up", "result >= one")
    assert measurement.phase == "Error"
    assert "is not a condition" in measurement.message
    assert source.queries == []

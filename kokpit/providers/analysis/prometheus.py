"""A Prometheus server's instant queries (``GET /api/v1/query``), reduced to one number.

An analysis step asks one question per query ("what share of pod creations succeeded in the
last minute?"), so the answer must be exactly one number: a scalar, or a vector of exactly one
sample. Everything else is an :class:`AnalysisError` whose message a person can act on, and
which quotes the query but never credentials:

* an empty vector (the series does not exist, or nothing matched: a typo in a label, or no
  data yet), several series (a ``sum`` or a ``by`` is missing), a range vector or a string;
* NaN (``0/0``: no traffic in the window), which no condition could judge;
* Prometheus' own ``"status": "error"`` (bad PromQL, a query timeout), with its ``error``;
* an HTTP error, a connection refused, a timeout, an answer that is not Prometheus JSON.

Why aiohttp and not a second HTTP stack: every other client in kokpit (the API server's,
webhooks') is aiohttp, and one stack is one set of TLS and timeout behaviours to reason about.
TLS is verified against ``ca_data`` (PEM content, in memory: a path would let whoever writes
the URL name files) or the system's CAs; redirects are not followed and the environment's
proxies are not used. A user or password in the URL is refused: they would end in messages.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

__all__ = ["AnalysisError", "PrometheusClient", "PrometheusOptions"]

#: How much of a query, or of an error answer, a message quotes.
SHOWN = 200


class AnalysisError(Exception):
    """A query that gave no single number; the message is for a person."""


@dataclass(frozen=True)
class PrometheusOptions:
    #: Seconds for the whole request (connect, query, answer). Prometheus' own query timeout
    #: is 2 minutes by default: an analysis should not wait that long for one measurement.
    timeout: float = 10.0
    #: PEM certificates to verify an https server with (None: the system's CAs).
    ca_data: bytes | None = None
    #: Do not verify an https server's certificate (for a test server only).
    insecure_skip_verify: bool = False
    #: Answers larger than this are refused (one number never needs more).
    max_answer_bytes: int = 1 << 20


class PrometheusClient:
    """Instant queries against the Prometheus at ``base_url`` (``http(s)://host:port[/path]``);
    use as ``async with`` or call :meth:`close`."""

    def __init__(self, base_url: str, options: PrometheusOptions | None = None) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise AnalysisError(
                f"the Prometheus URL must be http(s)://host[:port], not {base_url[:SHOWN]!r}"
            )
        if parsed.username or parsed.password:
            raise AnalysisError("the Prometheus URL must not carry a user or password")
        self.base_url = base_url.rstrip("/")
        self.options = options or PrometheusOptions()
        self._ssl = _ssl_context(self.options) if parsed.scheme == "https" else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def query(self, promql: str) -> float:
        """The one number ``promql`` evaluates to now; raises :class:`AnalysisError`."""
        shown = _quote(promql)
        url = f"{self.base_url}/api/v1/query"
        try:
            async with asyncio.timeout(self.options.timeout):
                async with self._client().get(
                    url,
                    params={"query": promql},
                    ssl=self._ssl if self._ssl is not None else True,
                    allow_redirects=False,
                ) as response:
                    body = await response.content.read(self.options.max_answer_bytes + 1)
                    status = response.status
        except TimeoutError:
            raise AnalysisError(
                f"Prometheus at {self.base_url} did not answer query {shown} within "
                f"{self.options.timeout:g} s"
            ) from None
        except aiohttp.ClientError as e:
            raise AnalysisError(
                f"cannot reach Prometheus at {self.base_url} for query {shown}: {_reason(e)}"
            ) from None
        if len(body) > self.options.max_answer_bytes:
            raise AnalysisError(f"Prometheus' answer to query {shown} is too large")
        return _value(shown, status, body)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session


def _value(shown: str, status: int, body: bytes) -> float:
    """The number in a ``/api/v1/query`` answer (pure: the unit tests' table goes here)."""
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        text = body[:SHOWN].decode(errors="replace")
        raise AnalysisError(
            f"Prometheus answered query {shown} with HTTP {status} and no Prometheus result: "
            f"{text!r}"
        )
    if answer["status"] == "error":
        error_type = str(answer.get("errorType") or "error")[:40]
        error = str(answer.get("error") or "")[:SHOWN]
        raise AnalysisError(
            f"Prometheus refused query {shown} ({error_type}, HTTP {status}): {error}"
        )
    if status != 200:
        raise AnalysisError(f"Prometheus answered query {shown} with HTTP {status}")
    data = answer.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    sample: Any
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            raise AnalysisError(
                f"query {shown} returned no data (no series matched: check the metric and "
                "label names, or there are no samples in the window yet)"
            )
        if len(result) > 1:
            raise AnalysisError(
                f"query {shown} returned {len(result)} series, not one (aggregate them, "
                "for example with sum(...))"
            )
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise AnalysisError(
            f"query {shown} returned a {kind or 'malformed'} result, not a scalar or one sample"
        )
    try:
        value = float(sample[1])  # [timestamp, "value"]
    except (TypeError, IndexError, ValueError):
        raise AnalysisError(f"query {shown} returned a sample that is not a number") from None
    if math.isnan(value):
        raise AnalysisError(
            f"query {shown} returned NaN (a division by zero? no samples in the window?)"
        )
    return value


def _ssl_context(options: PrometheusOptions) -> ssl.SSLContext:
    if options.insecure_skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if options.ca_data is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=options.ca_data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise AnalysisError("the Prometheus CA bundle is not PEM certificates") from None


def _quote(promql: str) -> str:
    text = promql if len(promql) <= SHOWN else promql[:SHOWN] + "..."
    return repr(text)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:SHOWN]}" if text else type(error).__name__

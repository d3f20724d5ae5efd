"""Measuring a rollout's metrics against the Prometheus servers rollouts name.

A Rollout names its Prometheus by URL, so the operator keeps one client (one connection pool)
per server rather than one per measurement; the URL is a Rollout author's input, so the number
of clients kept is bounded (the least recently used one is closed), a malformed URL is a
measurement ``Error`` rather than an exception, and no credentials are ever sent.
"""

from __future__ import annotations

from collections import OrderedDict

from kokpit.providers.analysis.measure import Measurement, measure
from kokpit.providers.analysis.prometheus import AnalysisError, PrometheusClient, PrometheusOptions

#: Prometheus servers kept connected at once.
CLIENTS_MAX = 16


class PrometheusReader:
    """Measures one metric at a time against the Prometheus at a given address."""

    def __init__(self, options: PrometheusOptions | None = None) -> None:
        self._options = options or PrometheusOptions()
        self._clients: OrderedDict[str, PrometheusClient] = OrderedDict()

    async def measure(
        self,
        address: str,
        query: str,
        success_condition: str | None,
        failure_condition: str | None,
    ) -> Measurement:
        try:
            client = await self._client(address)
        except AnalysisError as e:
            return Measurement("Error", None, str(e))
        return await measure(client, query, success_condition, failure_condition)

    async def close(self) -> None:
        while self._clients:
            _, client = self._clients.popitem()
            await client.close()

    async def _client(self, address: str) -> PrometheusClient:
        client = self._clients.get(address)
        if client is not None:
            self._clients.move_to_end(address)
            return client
        client = self._clients[address] = PrometheusClient(address, self._options)
        if len(self._clients) > CLIENTS_MAX:
            _, oldest = self._clients.popitem(last=False)
            await oldest.close()
        return client

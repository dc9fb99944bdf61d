"""A collector whose families are rendered once per change of its state, not at every scrape.

The data-health and multivariate gauges (health_metrics.py, multivariate_metrics.py) change only
when a run finishes or the store is re-read: their text is kept, keyed by the state's ``version``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector


class RenderedCollector(Collector):
    """Subclasses set ``self.state`` (with a ``version``), and define ``collect`` and ``_families``."""

    def __init__(self) -> None:
        # Its own registry renders exposition_parts(): the families as generate_latest writes them.
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Rendered(self))
        self._texts: dict[bool, tuple[int, bytes]] = {}  # openmetrics -> (state version, text)

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()  # without samples: registering runs no collect()

    def exposition_parts(self, openmetrics: bool = False) -> list[bytes]:
        """collect()'s families as the encoder writes them (no ``# EOF``), re-rendered only
        after the state changed."""
        version = self.state.version  # read first: a change while rendering renders again next time
        cached = self._texts.get(openmetrics)
        if cached is None or cached[0] != version:
            encode = generate_openmetrics if openmetrics else generate_latest
            cached = self._texts[openmetrics] = (version, encode(self._registry).removesuffix(b"# EOF\n"))
        return [cached[1]]

    @staticmethod
    def _families() -> dict:
        raise NotImplementedError


class _Rendered(Collector):
    """The collector's families on its private registry (only collect(): nothing to describe twice)."""

    def __init__(self, collector: RenderedCollector):
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        return self.collector.collect()

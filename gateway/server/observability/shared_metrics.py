"""Metrics of several worker processes (``server.workers``), summed on whichever worker answers
the scrape.

Each worker writes its own registry, in Prometheus' text format, to a file of its own in a
directory the supervisor made (at most ``PUBLISH_INTERVAL`` seconds old, and fresh for the worker
answering). A scrape reads every worker's file and sums each sample over the workers: counters
and histograms add up, as do the gauges of things in progress (transfers, followers, buffers).
What is not a quantity is not summed: ``_created`` takes the earliest, and a dependency is up
only if it is up for every worker (``MIN_SAMPLES``). A worker that was restarted starts its
counters again from zero, which Prometheus reads as a counter reset, as after any restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# How stale another worker's figures may be when a scrape reads them.
PUBLISH_INTERVAL = 1.0
# Samples combined by their minimum rather than their sum.
MIN_SAMPLES = frozenset({"gateway_dependency_up"})

_Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Worker:
    """A worker process of ``gateway serve --workers N``: its number (1..N) and the directory
    where the workers publish their figures."""

    index: int
    metrics_dir: str


class SharedMetrics:
    """One worker's side: publish its registry, and render the sum of every worker's."""

    def __init__(self, registry: CollectorRegistry, worker: Worker) -> None:
        self._registry = registry
        self._directory = Path(worker.metrics_dir)
        self._path = self._directory / f"worker-{worker.index}.prom"

    def publish(self) -> None:
        """Write this worker's figures (atomically: a reader sees the old file or the new)."""
        partial = self._path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(generate_latest(self._registry))
        partial.replace(self._path)

    def render(self) -> bytes:
        """Every worker's figures, summed, in Prometheus' text format (version 0.0.4)."""
        self.publish()
        texts = []
        for path in sorted(self._directory.glob("worker-*.prom")):
            with contextlib.suppress(FileNotFoundError):
                texts.append(path.read_text(encoding="utf-8"))
        return merge(texts)

    async def context(self, app: object) -> AsyncIterator[None]:
        """A ``cleanup_ctx`` of the app: publish while it runs."""
        async with self.publishing():
            yield

    @contextlib.asynccontextmanager
    async def publishing(self) -> AsyncIterator[None]:
        """Publish every ``PUBLISH_INTERVAL`` seconds while the block runs."""

        async def loop() -> None:
            while True:
                self.publish()
                await asyncio.sleep(PUBLISH_INTERVAL)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def merge(texts: Iterable[str]) -> bytes:
    """The samples of several expositions combined (see the module's docstring), rendered by
    prometheus_client as it renders a registry."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_Key, Sample]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, family)
            into = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = into.get(key)
                if seen is None:
                    into[key] = sample
                    continue
                if sample.name.endswith("_created") or family.name in MIN_SAMPLES:
                    value = min(seen.value, sample.value)
                else:
                    value = seen.value + sample.value
                into[key] = seen._replace(value=value)
    merged = []
    for name, family in families.items():
        combined = Metric(family.name, family.documentation, family.type)
        combined.samples = list(values[name].values())
        merged.append(combined)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(merged))
    return generate_latest(registry)


class _Fixed(Collector):
    """A collector that yields the families it was given."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families

"""What ``/metrics`` reports, in the Prometheus text exposition format (version 0.0.4).

Process-lifetime state is small: the provider latency histogram and error counts, recorded by
``InstrumentedProvider`` (a decorator around any ``ImageProvider``, so the service need not
change). Jobs by state and what was charged per model come from the ledger at scrape time;
queue length and running jobs from the scheduler, when there is one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.errors import ProviderError
from bot.models import GeneratedImage, GenerationRequest, ModelSpec
from bot.money import MICROS_PER_USD
from bot.provider.client import ImageProvider
from bot.store.ledger import JobStats

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "ClusterGauges",
    "Histogram",
    "InstrumentedProvider",
    "Metrics",
    "QueueGauges",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Image APIs answer in seconds, rarely in minutes.
LATENCY_BUCKETS: tuple[float, ...] = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300)


class QueueGauges(Protocol):
    """What the scheduler exposes: jobs waiting for a provider slot, jobs with one, the
    current cap on concurrent provider calls, and recent provider latency."""

    @property
    def queued(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def latency_seconds(self) -> float | None:
        """Recent provider latency (what ETAs are computed from); ``None`` before any call."""
        ...

    @property
    def cluster(self) -> ClusterGauges | None:
        """The whole queue's figures when several processes share it (PostgreSQL); ``None``
        when this process's queue is the only one."""
        ...


class ClusterGauges(Protocol):
    """The queue every process shares: waiting jobs, provider calls in flight, the current
    cluster-wide cap and the configured one."""

    @property
    def queued(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def max_concurrent(self) -> int: ...


@dataclass
class Histogram:
    """A cumulative histogram per label value (here: the model id)."""

    buckets: Sequence[float] = LATENCY_BUCKETS
    counts: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def observe(self, label: str, value: float) -> None:
        counts = self.counts.setdefault(label, [0] * (len(self.buckets) + 1))
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                counts[index] += 1
        counts[-1] += 1  # +Inf
        self.sums[label] = self.sums.get(label, 0.0) + value

    def count(self, label: str) -> int:
        counts = self.counts.get(label)
        return 0 if counts is None else counts[-1]


@dataclass
class Metrics:
    """The process's own measurements (the ledger keeps the rest)."""

    provider_latency: Histogram = field(default_factory=Histogram)
    provider_errors: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe_provider(self, model: str, seconds: float, error: str | None = None) -> None:
        self.provider_latency.observe(model, seconds)
        if error is not None:
            key = (model, error)
            self.provider_errors[key] = self.provider_errors.get(key, 0) + 1


class InstrumentedProvider:
    """An ``ImageProvider`` that times each call of the one it wraps, by model. Calls that
    fail with a ``ProviderError`` count too (with their error); cancelled ones do not."""

    def __init__(self, provider: ImageProvider, metrics: Metrics) -> None:
        self.provider = provider
        self.metrics = metrics

    @property
    def billable(self) -> bool:
        return self.provider.billable

    async def generate(
        self, request: GenerationRequest, spec: ModelSpec
    ) -> tuple[GeneratedImage, ...]:
        started = time.perf_counter()
        try:
            images = await self.provider.generate(request, spec)
        except ProviderError as exc:
            self.metrics.observe_provider(
                spec.id, time.perf_counter() - started, type(exc).__name__
            )
            raise
        self.metrics.observe_provider(spec.id, time.perf_counter() - started)
        return images


def render(metrics: Metrics, *, stats: JobStats | None, queue: QueueGauges | None = None) -> str:
    """The exposition text. ``stats`` is ``None`` when the ledger did not answer; its series
    are then left out and ``imagine_database_up`` is 0."""
    out: list[str] = []
    _family(out, "imagine_database_up", "gauge", "1 when the ledger answered this scrape.")
    out.append(f"imagine_database_up {0 if stats is None else 1}")
    if stats is not None:
        _family(out, "imagine_jobs", "gauge", "Jobs in the ledger by state.")
        for state, count in sorted(stats.by_state.items()):
            out.append(f"imagine_jobs{_labels(state=state)} {count}")
        _family(out, "imagine_images_charged_total", "counter", "Images charged, by model.")
        for model, (images, _) in stats.charged.items():
            out.append(f"imagine_images_charged_total{_labels(model=model)} {images}")
        _family(out, "imagine_charged_usd_total", "counter", "US dollars charged, by model.")
        for model, (_, micros) in stats.charged.items():
            usd = _number(micros / MICROS_PER_USD)
            out.append(f"imagine_charged_usd_total{_labels(model=model)} {usd}")
    cluster = None if queue is None else queue.cluster
    if queue is not None and cluster is None:
        _family(out, "imagine_queue_length", "gauge", "Jobs waiting for a provider slot.")
        out.append(f"imagine_queue_length {queue.queued}")
        _family(out, "imagine_jobs_running", "gauge", "Jobs calling the provider now.")
        out.append(f"imagine_jobs_running {queue.running}")
        _family(
            out, "imagine_concurrency_limit", "gauge", "Current cap on concurrent provider calls."
        )
        out.append(f"imagine_concurrency_limit {queue.concurrency}")
    if queue is not None and cluster is not None:
        # Several processes share the queue: each figure says whose it is in its name.
        for name, help_text, value in (
            ("process_queue_length", "This process's jobs waiting for a slot.", queue.queued),
            ("process_jobs_running", "This process's jobs calling the provider.", queue.running),
            ("cluster_queue_length", "Jobs waiting for a slot, all processes.", cluster.queued),
            ("cluster_jobs_running", "Provider calls in flight, all processes.", cluster.running),
            (
                "cluster_concurrency_limit",
                "Current cluster-wide cap on concurrent provider calls.",
                cluster.concurrency,
            ),
            (
                "cluster_concurrency_max",
                "Configured cluster-wide cap (MAX_CONCURRENT_JOBS).",
                cluster.max_concurrent,
            ),
        ):
            _family(out, f"imagine_{name}", "gauge", help_text)
            out.append(f"imagine_{name} {value}")
    if queue is not None and queue.latency_seconds is not None:
        _family(
            out,
            "imagine_provider_latency_estimate_seconds",
            "gauge",
            "Recent provider latency that queue ETAs are computed from.",
        )
        estimate = _number(queue.latency_seconds)
        out.append(f"imagine_provider_latency_estimate_seconds {estimate}")
    _histogram(
        out,
        "imagine_provider_latency_seconds",
        "Time the image provider took per call, by model.",
        metrics.provider_latency,
    )
    _family(
        out, "imagine_provider_errors_total", "counter", "Failed provider calls by model, error."
    )
    for (model, error), count in sorted(metrics.provider_errors.items()):
        out.append(f"imagine_provider_errors_total{_labels(model=model, error=error)} {count}")
    return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _histogram(out: list[str], name: str, help_text: str, histogram: Histogram) -> None:
    _family(out, name, "histogram", help_text)
    for label in sorted(histogram.counts):
        counts = histogram.counts[label]
        bounds: Iterable[float] = (*histogram.buckets, math.inf)
        for bound, count in zip(bounds, counts, strict=True):
            out.append(f"{name}_bucket{_labels(model=label, le=_number(bound))} {count}")
        out.append(f"{name}_sum{_labels(model=label)} {_number(histogram.sums[label])}")
        out.append(f"{name}_count{_labels(model=label)} {counts[-1]}")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return f"{value:.1f}"
    return repr(float(value))

"""Prometheus text exposition format (0.0.4), by hand: both daemons render their
families with it (no prometheus_client dependency for ~80 lines of format).

A `Family` is a name, a type, a HELP line and its samples; `render` writes them in
order, one ``# HELP`` and ``# TYPE`` per family, label values escaped as the format
says (backslash, double quote, newline).  Histograms are given as a `Histogram`
value per label set and written as ``_bucket{le=...}``, ``_sum`` and ``_count``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Family", "Histogram", "render", "escape", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = Mapping[str, str]


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    if "\\" not in value and "\"" not in value and "\n" not in value:
        return value                # nearly always: names the model validated
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels.items()) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in items) + "}"


def _number(v: float) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts for ``bounds`` (the +Inf bucket is ``count``)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]         # cumulative, one per bound
    total: float = 0.0              # the sum of every observation
    count: int = 0

    @staticmethod
    def empty(bounds: tuple[float, ...]) -> Histogram:
        return Histogram(bounds, tuple(0 for _ in bounds))

    def observe(self, value: float) -> Histogram:
        """A new histogram with ``value`` counted (values are immutable: published whole)."""
        return Histogram(self.bounds, tuple(c + (value <= b) for b, c in
                                            zip(self.bounds, self.counts)),
                         self.total + value, self.count + 1)


@dataclass
class Family:
    """One metric family: ``kind`` is counter, gauge or histogram."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Labels, float | Histogram]] = field(default_factory=list)

    def add(self, value: float | Histogram, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families`` (a family without samples still says its
    HELP and TYPE, so a dashboard sees every name)."""
    out: list[str] = []
    seen: dict[tuple, str] = {}     # label sets repeat across families (a port's 8 counters)
    for f in families:
        out.append(f"# HELP {f.name} {f.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            if isinstance(value, Histogram):
                for bound, c in zip(value.bounds, value.counts):
                    out.append(f"{f.name}_bucket{_labels(labels, ('le', _number(bound)))} {c}")
                out.append(f"{f.name}_bucket{_labels(labels, ('le', '+Inf'))} {value.count}")
                out.append(f"{f.name}_sum{_labels(labels)} {_number(value.total)}")
                out.append(f"{f.name}_count{_labels(labels)} {value.count}")
            else:
                key = tuple(labels.items())
                text = seen.get(key)
                if text is None:
                    text = seen[key] = _labels(labels)
                out.append(f"{f.name}{text} {_number(value)}")
    return "\n".join(out) + "\n"

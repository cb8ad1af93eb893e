"""The bench's harness: figures (a median, its spread, a baseline from the same run and
the ratio), the report that collects them, prints them as they come and writes the
table and the JSON."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUICK = os.environ.get("METAFS_BENCH_QUICK") == "1"
#: a median and its spread (min, max)
Sample = tuple[float, tuple[float, float]]


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    spread: tuple[float, float]
    baseline_name: str = ""
    baseline: float | None = None
    goal: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


def spread(values: Sequence[float]) -> Sample:
    """The median of ``values``, with their range."""
    return statistics.median(values), (min(values), max(values))


def single(value: float) -> Sample:
    """One measurement, its own range."""
    return value, (value, value)


def rounds(op: Callable[[], object], n: int, r: int = 7) -> Sample:
    """Median per-operation time in µs over ``r`` rounds of ``n`` calls, and the spread."""
    for _ in range(max(n // 10, 3)):  # warm up
        op()
    meds = []
    for _ in range(r):
        t0 = time.perf_counter()
        for _ in range(n):
            op()
        meds.append((time.perf_counter() - t0) / n * 1e6)
    return spread(meds)


def _num(value: float) -> str:
    """A figure as written in the table: ``:g``, but a million bytes whole, not 1e+06."""
    return f"{value:.0f}" if abs(value) >= 1e6 else f"{value:g}"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


class Report:
    """The figures of one run, in the order they were measured."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def record(
        self,
        section: str,
        name: str,
        value: Sample,
        unit: str,
        baseline: tuple[str, float] | None = None,
        goal: str = "",
        **extra: Any,
    ) -> None:
        fig = Figure(
            section,
            name,
            round(value[0], 2),
            unit,
            (round(value[1][0], 2), round(value[1][1], 2)),
            goal=goal,
            extra=extra,
        )
        if baseline:
            fig.baseline_name, fig.baseline = baseline[0], round(baseline[1], 2)
        self.figures.append(fig)
        ratio = f"{fig.ratio:.2f}x {fig.baseline_name}" if fig.ratio else ""
        print(f"  {section:<12} {name:<44} {fig.value:>12.2f} {unit:<6} {ratio}", flush=True)

    def table(self) -> str:
        lines = [
            "| section | figure | metafs | spread | baseline | ratio | goal |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        for f in self.figures:
            base = f"{f.baseline_name} {_num(f.baseline)} {f.unit}" if f.baseline is not None else ""
            ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
            spread = f"{_num(f.spread[0])}..{_num(f.spread[1])}"
            value = f"{_num(f.value)} {f.unit}"
            lines.append(f"| {f.section} | {f.name} | {value} | {spread} | {base} | {ratio} | {f.goal} |")
        return "\n".join(lines)

    def write(self, path: Path, machine: str, seconds: float) -> None:
        result = {
            "machine": machine,
            "seconds": round(seconds, 1),
            "quick": QUICK,
            "figures": [asdict(f) | {"ratio": f.ratio} for f in self.figures],
        }
        path.write_text(json.dumps(result, indent=2))

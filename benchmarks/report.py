"""What every benchmark reports through: its rows, its notes, the table `make bench` prints, and its log lines.

benchmarks.run and the workloads it runs (benchmarks.fleet, slow_store, skew, zim_process, api_path, replay)
import this module and not each other, so that run.py can import them without a circle.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    pass


@dataclass
class Row:
    metric: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    ok: bool | None  # None: for information, no target


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)
        for row in rows:
            print(f"  {row.metric}: {row.measured} (baseline {row.baseline})", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def print_table(report: Report) -> None:
    header = ("metric", "measured", "baseline", "ratio", "target", "result")
    lines = [
        (
            row.metric,
            row.measured,
            row.baseline,
            "-" if row.ratio is None else f"{row.ratio:.2f}",
            row.target,
            "info" if row.ok is None else ("pass" if row.ok else "FAIL"),
        )
        for row in sorted(report.rows, key=lambda row: int(row.metric.split(".")[0]))
    ]
    widths = [max(len(line[column]) for line in [header, *lines]) for column in range(len(header))]
    print()
    for line in [header, tuple("-" * width for width in widths), *lines]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    print()
    for note in report.notes:
        print(f"- {note}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The function's logs and EMF blobs away from the table (for the in-process measurements)."""
    from handler.aws.observability import logger

    sink = io.StringIO()
    logger.registered_handler.setStream(sink)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.registered_handler.setStream(sys.stdout)  # type: ignore[attr-defined]

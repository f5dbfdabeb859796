"""Clocks apart between environments, against ZEGO's window (row 9 of make bench).

    python -m benchmarks.skew [--offsets 0,5,20,50,100] [--repeat N] [--cpu-share [F]]   (about 20 s an offset)

Slots are moments on each environment's own clock: an environment whose clock runs ahead sends its calls early by
as much, on the one timeline the fleet shares. The fleet benchmark's "two" workload (two queue environments, 180
kickouts for 180 rooms, the real handler in a process each, the ZIM stand-in refusing a 21st call in any sliding
second) runs once per offset, with the second environment's clock that far ahead of the first's
(benchmarks.fleet_env, KICKOUT_BENCH_CLOCK_OFFSET). What the margin should tolerate: twenty slots span
20 / (20 x 0.96) = 1.0417 s, so two calls twenty slots apart stay a second apart while the one's clock leads the
other's, plus the lateness a call may have (MAX_LATENESS, 20 ms), by at most 41.7 ms: clocks up to about 21 ms apart.
Lambda's clocks (chrony, the Amazon Time Sync Service) agree to well under a millisecond.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from benchmarks.cpu_share import LAMBDA_SHARE_256_MB, cpu_share
from benchmarks.fleet import Backend, run_workload, template_defaults, two
from benchmarks.run import Report, Row, log, print_table
from handler.fleet.budget import MARGIN, MAX_LATENESS
from kickout_dev.processes import MotoServer

OFFSETS_MS = (0, 5, 20, 50, 100)


def tolerated_ms(limit: float) -> float:
    """How far apart two clocks may be while calls leave up to MAX_LATENESS late: what the margin leaves over."""
    span = 20 / (limit * (1 - MARGIN))  # twenty slots
    return (span - 1.0 - MAX_LATENESS) * 1000


def measure_skew(
    report: Report, offsets_ms: Sequence[float] = OFFSETS_MS, repeat: int = 1, share: float | None = None
) -> None:
    defaults = template_defaults()
    tolerated = tolerated_ms(defaults.zego_limit)
    with ExitStack() as stack:
        logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="kickout-skew-"))
        moto = stack.enter_context(MotoServer(Path(logs)))
        held = stack.enter_context(cpu_share(share)) if share is not None else None
        label = f" at {held.fraction:.3f} CPU" if held is not None and held.held else ""
        backend = Backend.create(moto.url)
        for offset in offsets_ms:
            for _ in range(repeat):
                log(f"skew: the second queue environment's clock {offset:g} ms ahead{label}")
                outcome = run_workload(
                    two(), backend, defaults, Path(logs), share=held, clock_offsets=(0.0, offset / 1000)
                )
                within = offset <= tolerated
                report.add(
                    Row(
                        f"9. clocks {offset:g} ms apart{label}: refused for rate (2 queue environments, 180 kickouts)",
                        f"{outcome.refused_rate} of {outcome.calls + outcome.refused_rate} calls; "
                        f"{outcome.call_rate:.2f} calls/s",
                        "stand-in at 20 in any second",
                        None,
                        f"0 (within the {tolerated:.0f} ms the margin leaves)" if within else "info: beyond it",
                        outcome.refused_rate == 0 if within else None,
                    )
                )
    report.note(
        f"skew (9): the margin leaves {tolerated:.1f} ms for clocks apart once calls may leave "
        f"{MAX_LATENESS * 1000:.0f} ms late; Lambda's clocks (Amazon Time Sync Service) agree to well under 1 ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--offsets", default=",".join(map(str, OFFSETS_MS)), help="ms, comma separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each offset (default 1)")
    parser.add_argument("--cpu-share", type=float, nargs="?", const=LAMBDA_SHARE_256_MB, help="as benchmarks.fleet")
    args = parser.parse_args(argv)
    report = Report()
    began = time.monotonic()
    measure_skew(report, [float(text) for text in args.offsets.split(",") if text], args.repeat, args.cpu_share)
    print_table(report)
    print(f"\n({time.monotonic() - began:.0f} s; python -m benchmarks.skew)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ZIM stand-in in a process of its own, for the fleet benchmark: ZEGO's clock must not share a GIL with SQS.

    python -m benchmarks.zim_process --latency 0.05 --max-requests-per-second 20

In the benchmark's own process the stand-in's request threads waited for the GIL while that process built batches
of hundreds of records and parsed the environments' replies: a request that left an environment on time (on the
wire 1.3 ms after its slot) was counted 80 ms later, next to calls that left after it, and refused as a 21st in
its second although it was not. Here nothing else runs. It prints its URL, then answers each line on stdin:
`kickouts` and `refusals` (one JSON line each, what the stand-in recorded so far); an empty line or EOF stops it.
`time.monotonic` is the machine's, so the times it records compare with the benchmark's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from types import TracebackType
from typing import IO, Any, Self

from benchmarks.run import ROOT, BenchError
from kickout_dev.processes import terminate
from kickout_dev.sandbox import APP_ID, SERVER_SECRET
from kickout_dev.zim_server import Kickout, ZimStandIn


class ZimProcess:
    """What the fleet benchmark reads of its stand-in (url, kickouts, refusals), served by a child process."""

    def __init__(self, *, latency: float, max_requests_per_second: int) -> None:
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.zim_process",
                "--latency",
                str(latency),
                "--max-requests-per-second",
                str(max_requests_per_second),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self._line().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.close()
            raise BenchError(f"the ZIM stand-in's process said {self.url!r}, not its URL")

    def _line(self) -> str:
        out: IO[str] | None = self.process.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise BenchError("the ZIM stand-in's process exited")
        return line

    def _ask(self, what: str) -> Any:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        with self._lock:
            stdin.write(what + "\n")
            stdin.flush()
            return json.loads(self._line())

    @property
    def kickouts(self) -> list[Kickout]:
        return [Kickout(**{**item, "user_ids": tuple(item["user_ids"])}) for item in self._ask("kickouts")]

    @property
    def refusals(self) -> list[tuple[int, str]]:
        return [(int(code), str(why)) for code, why in self._ask("refusals")]

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        terminate(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--max-requests-per-second", type=int)
    args = parser.parse_args(argv)
    with ZimStandIn(
        APP_ID, SERVER_SECRET, latency=args.latency, max_requests_per_second=args.max_requests_per_second
    ) as zim:
        print(zim.url, flush=True)
        for line in sys.stdin:
            match line.strip():
                case "kickouts":
                    print(json.dumps([asdict(kickout) for kickout in list(zim.kickouts)]), flush=True)
                case "refusals":
                    print(json.dumps(list(zim.refusals)), flush=True)
                case _:
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())

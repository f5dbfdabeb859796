"""Processes held to a share of one CPU, as Lambda holds a function to its memory's share (256 of 1,769 MB: 1/7).

    with cpu_share(1 / 7) as share:
        process = subprocess.Popen(...)
        share.confine(process.pid)

Each confined process gets a cgroup of its own with a CFS quota of `fraction` x `period` per `period` (cgroup v1's
cpu controller: cpu.cfs_quota_us / cpu.cfs_period_us; v2: cpu.max), so every execution environment of the fleet
benchmark gets its own share, as each Lambda environment does. What it creates it removes on the way out (a process
still inside is moved back to this process's own cgroup first). Where no cgroup can be had (no cpu controller, not
root, a read-only /sys), `confine` does nothing and `note` says so: the run goes on at full speed, said aloud.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

LAMBDA_SHARE_256_MB: Final = 256 / 1769
"""Lambda gives a function one vCPU at 1,769 MB and a proportional share below it: 0.145 at 256 MB."""
PERIOD: Final = 0.1
"""The kernel's default CFS period (s): a process that spends its quota early waits out the rest of the period."""


@dataclass
class CpuShare:
    fraction: float
    period: float = PERIOD
    note: str = ""
    """Empty when processes are held to the share; else why they run at full speed."""
    _hierarchy: Path | None = None
    _version: int = 0
    _home: Path | None = None
    """The cgroup this process is in: where a confined process still alive at the end is moved back to."""
    _created: list[Path] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self._hierarchy is not None

    def describe(self) -> str:
        if not self.held:
            return f"full speed ({self.note})"
        return f"{self.fraction:.3f} CPU each (CFS quota, {self.period * 1000:.0f} ms period, cgroup v{self._version})"

    def confine(self, pid: int) -> None:
        """Hold process `pid` (and the threads and children it will have) to the share, in a cgroup of its own."""
        if self._hierarchy is None:
            return
        group = self._hierarchy / f"kickout-bench-{os.getpid()}-{len(self._created)}"
        group.mkdir()
        self._created.append(group)
        period_us = round(self.period * 1_000_000)
        quota_us = max(1000, round(self.fraction * period_us))
        if self._version == 1:
            (group / "cpu.cfs_period_us").write_text(str(period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            (group / "cpu.max").write_text(f"{quota_us} {period_us}")
        (group / "cgroup.procs").write_text(str(pid))

    def throttled_seconds(self) -> float:
        """Seconds the confined processes spent held back by their quota so far (cpu.stat), 0 where unknown."""
        total = 0.0
        for group in self._created:
            with contextlib.suppress(OSError, ValueError):
                for line in (group / "cpu.stat").read_text().splitlines():
                    name, value = line.split()
                    if name == "throttled_time":  # v1, ns
                        total += int(value) / 1e9
                    elif name == "throttled_usec":  # v2
                        total += int(value) / 1e6
        return total

    def close(self) -> None:
        for group in reversed(self._created):
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    if self._home is not None:
                        with contextlib.suppress(OSError):
                            (self._home / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
        self._created.clear()


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup mount."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                found.append((parts[1], parts[2], set(parts[3].split(","))))
    return found


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path in the v1 hierarchy of `controller`, or in v2's (None)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (controller is None and controllers == "") or (controller in controllers.split(",")):
                return path
    return "/"


def _place(share: CpuShare) -> None:
    """Find a cgroup hierarchy with a CFS quota this process may use, or say in `note` why there is none."""
    mounts = _mounts()
    for point, kind, options in mounts:
        if kind == "cgroup" and "cpu" in options:
            home = Path(point) / _own_cgroup("cpu").lstrip("/")
            if os.access(home, os.W_OK) and (home / "cpu.cfs_quota_us").exists():
                share._hierarchy, share._version, share._home = home, 1, home
                return
            share.note = f"no writable cgroup v1 cpu controller at {home}"
    for point, kind, _ in mounts:
        if kind == "cgroup2":
            home = Path(point) / _own_cgroup(None).lstrip("/")
            with contextlib.suppress(OSError):
                if "cpu" in (home / "cgroup.subtree_control").read_text().split() and os.access(home, os.W_OK):
                    share._hierarchy, share._version, share._home = home, 2, home
                    return
            share.note = f"cgroup v2 at {home} does not delegate the cpu controller"
    share.note = share.note or "no cgroup cpu controller on this machine"


@contextlib.contextmanager
def cpu_share(fraction: float, period: float = PERIOD) -> Iterator[CpuShare]:
    """A way to hold processes to `fraction` of one CPU; every cgroup it made removed on the way out."""
    share = CpuShare(fraction, period)
    _place(share)
    if share.held:
        # A trial group: mkdir and a quota can still be refused (a read-only /sys, a container without the right).
        try:
            _trial(share)
        except OSError as error:
            share._hierarchy = None
            share.note = f"cgroups refused ({type(error).__name__}: {error})"
    try:
        yield share
    finally:
        share.close()


def _trial(share: CpuShare) -> None:
    assert share._hierarchy is not None
    group = share._hierarchy / f"kickout-bench-{os.getpid()}-trial"
    group.mkdir()
    try:
        name = "cpu.cfs_quota_us" if share._version == 1 else "cpu.max"
        value = "50000" if share._version == 1 else "50000 100000"
        (group / name).write_text(value)
    finally:
        group.rmdir()

"""CPU and memory of every part of the system, sampled with psutil in a background thread.

A part is a root process and its descendants (gunicorn's workers, Postgres's backends). For each
part: CPU seconds used between two marks, and resident memory — the part's largest process (what
the 250 MB per-worker target is about) and the part's sum — at every sample, so a phase reports
start, end and peak and a soak reports the trend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


@dataclass
class Sample:
    at: float
    cpu: dict[str, float]  # cumulative CPU seconds per part
    rss_max: dict[str, float]  # MB, the part's largest process
    rss_sum: dict[str, float]  # MB, all the part's processes
    machine: float = 0.0  # cumulative busy CPU seconds of the whole machine (every core, every user)


def _tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants; a negative pid means the process alone (the bench itself,
    whose children are the system)."""
    try:
        root = psutil.Process(abs(pid))
        return [root] if pid < 0 else [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass
class Sampler:
    """Every `period` seconds, CPU and RSS of each part named by `pids()` (re-read each time)."""

    pids: Callable[[], dict[str, int]]
    period: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    # The last CPU time read of every process ever seen, by (pid, start time): a process that ends
    # (a restart, a Postgres backend) keeps what it used, and one that cannot be read for a moment
    # (a zombie, a race with its exit) is neither dropped nor counted twice.
    _cpu_seen: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> Sample:
        rss_max: dict[str, float] = {}
        rss_sum: dict[str, float] = {}
        for part, pid in self.pids().items():
            biggest, summed = 0.0, 0.0
            for proc in _tree(pid):
                try:
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss / MB
                    key = (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                self._cpu_seen[key] = (part, times.user + times.system)
                biggest, summed = max(biggest, rss), summed + rss
            rss_max[part], rss_sum[part] = biggest, summed
        cpu: dict[str, float] = dict.fromkeys(rss_max, 0.0)
        for part, used in self._cpu_seen.values():
            cpu[part] = cpu.get(part, 0.0) + used
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        sample = Sample(time.time(), cpu, rss_max, rss_sum, busy)
        self.samples.append(sample)
        return sample

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.at <= t1]


def summarise(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per part: CPU seconds and share of one core, RSS (largest process) at start, end and peak."""
    if len(samples) < 2:
        return {}
    first, last = samples[0], samples[-1]
    wall = max(last.at - first.at, 1e-9)
    out = {}
    for part in last.cpu:
        used = last.cpu[part] - first.cpu.get(part, 0.0)
        out[part] = {
            "cpu_seconds": round(used, 2),
            "cpu_percent_of_core": round(100 * used / wall, 1),
            "rss_start_mb": round(first.rss_max.get(part, 0.0), 1),
            "rss_end_mb": round(last.rss_max[part], 1),
            "rss_peak_mb": round(max(s.rss_max.get(part, 0.0) for s in samples), 1),
            "rss_sum_peak_mb": round(max(s.rss_sum.get(part, 0.0) for s in samples), 1),
        }
    # What else ran on the machine meanwhile (other engineers' tests): the noise behind a figure.
    machine = last.machine - first.machine
    ours = sum(v["cpu_seconds"] for v in out.values())
    out["machine"] = {"cpu_seconds": round(machine, 2), "cpu_percent_of_core": round(100 * machine / wall, 1)}
    out["not_ours"] = {
        "cpu_seconds": round(machine - ours, 2),
        "cpu_percent_of_core": round(100 * (machine - ours) / wall, 1),
    }
    return out


def rss_trend(samples: list[Sample]) -> dict[str, float]:
    """Per part, the least-squares slope of the largest process's RSS over the samples, in MB/min."""
    if len(samples) < 3:
        return {}
    out = {}
    for part in samples[-1].rss_max:
        points = [(s.at, s.rss_max[part]) for s in samples if part in s.rss_max]
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_r = sum(r for _, r in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points) or 1e-9
        slope = sum((t - mean_t) * (r - mean_r) for t, r in points) / var
        out[part] = round(slope * 60, 2)
    return out

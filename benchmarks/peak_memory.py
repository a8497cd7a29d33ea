"""Peak resident memory of a block of code, for the benchmarks (Linux /proc)."""

import os
import threading


class PeakMemory:
    """Peak resident memory above the starting point, sampled every few milliseconds."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as stat:
            return int(stat.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

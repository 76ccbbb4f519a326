"""Progress for every long stage: a Rich bar on a terminal, periodic plain lines in a log file.

A cluster job's log is not a terminal, and a Rich bar there prints nothing until the end, so "hung" and "slow"
look the same. `StageProgress` therefore writes `label: done/total (pct) rate, ETA` lines every `interval_s`
seconds (and at the end) when stderr is not a TTY, and draws a bar when it is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

# Seconds between plain progress lines; AUGMENTER_PROGRESS_INTERVAL overrides it (tests use 0).
DEFAULT_INTERVAL_S = 10.0


def _interval() -> float:
    try:
        return float(os.environ.get("AUGMENTER_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S


def format_eta(seconds: float) -> str:
    """12 s, 3.4 min, 2.1 h: short enough for one log line."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class StageProgress:
    """Counts work items of one stage; a context manager. `enabled=False` makes it silent.

    >>> with StageProgress("score", total=152, unit="clips") as progress:
    ...     for clip in clips:
    ...         progress.advance()
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "items",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval_s: float | None = None,
        completed: int = 0,
    ) -> None:
        self.label, self.total, self.unit, self.enabled = label, int(total), unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = _interval() if interval_s is None else interval_s
        self.done = int(completed)
        self._start_done = int(completed)
        self._bar = None
        self._task = None
        self._started = 0.0
        self._last_line = 0.0

    @property
    def is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __enter__(self) -> StageProgress:
        self._started = self._last_line = time.perf_counter()
        if self.enabled and self.is_terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done, rate="")
        return self

    def rate(self) -> float:
        """Items per second since this run started (items done before a resume do not count)."""
        return (self.done - self._start_done) / max(1e-9, time.perf_counter() - self._started)

    def line(self) -> str:
        """`label: done/total (pct) rate unit/s, ETA` — what a log file shows."""
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f} %), "
            f"{rate:.2f} {self.unit}/s, ETA {format_eta(left)}"
        )

    def advance(self, n: int = 1, note: str = "") -> None:
        """Count n finished items; `note` (e.g. the current loss) is shown beside the bar or the line."""
        self.done += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            rate = f"{self.rate():.2f} {self.unit}/s" + (f" {note}" if note else "")
            self._bar.update(self._task, advance=n, rate=rate)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval_s or self.done >= self.total:
            self._last_line = now
            print(self.line() + (f" {note}" if note else ""), file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None


def track(
    items: Iterable[T], label: str, total: int | None = None, unit: str = "items", enabled: bool = True
) -> Iterator[T]:
    """Iterate `items`, reporting progress as `StageProgress` does."""
    if total is None:
        items = list(items)
        total = len(items)
    with StageProgress(label, total, unit=unit, enabled=enabled) as progress:
        for item in items:
            yield item
            progress.advance()

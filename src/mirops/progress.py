"""Human output of long work: one stderr console, and progress bars that become log lines off a terminal.

Scheduled runs (Prefect workers, `dvc repro` in CI) have no terminal, so a bar there would print nothing
until the end; `progress(...)` then logs "what: k/n" lines at most every `LOG_EVERY_S` seconds instead.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress

console = Console(stderr=True)
LOG_EVERY_S = 10.0


@contextmanager
def progress(what: str, total: int) -> Iterator[Callable[..., None]]:
    """A bar for `total` steps of `what`; yields `advance(k=1, description=None)`."""
    if console.is_terminal:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(what, total=total)

            def advance(k: int = 1, description: str | None = None) -> None:
                bar.update(task, advance=k, **({"description": description} if description else {}))

            yield advance
        return
    done, last, lock = 0, time.monotonic(), threading.Lock()

    def advance(k: int = 1, description: str | None = None) -> None:
        nonlocal done, last
        with lock:  # advanced from worker threads too (the import's audio check)
            done += k
            now = time.monotonic()
            due = now - last >= LOG_EVERY_S or done == total
            if due:
                last = now
        if due:
            console.print(f"{description or what}: {done}/{total}", highlight=False)

    yield advance


def warn(message: str) -> None:
    console.print(f"[yellow]warning[/]: {message}")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class _LineWriter:
    """A text file that hands each complete line to `sink`, without colour codes (the console picked its colour
    system when it was made, perhaps on a terminal)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink, self.pending, self.lock = sink, "", threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += _ANSI.sub("", text)
            *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.sink(line.rstrip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextmanager
def lines_to(sink: Callable[[str], None]) -> Iterator[None]:
    """Inside the block, everything the console prints goes to `sink` one plain line at a time (an
    orchestrator's run logger: its UI shows log records, not a terminal); bars become "what: k/n" lines."""
    before = console._file, console.soft_wrap
    console.file, console.soft_wrap = _LineWriter(sink), True  # soft wrap: one record per line, not per 80 chars
    try:
        yield
    finally:
        console._file, console.soft_wrap = before

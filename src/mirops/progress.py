"""Human output of long work: one stderr console, and progress bars that become log lines off a terminal.

Scheduled runs (Prefect workers, `dvc repro` in CI) have no terminal, so a bar there would print nothing
until the end; `progress(...)` then logs "what: k/n" lines at most every `LOG_EVERY_S` seconds instead.
"""

from __future__ import annotations

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
    done, last = 0, time.monotonic()

    def advance(k: int = 1, description: str | None = None) -> None:
        nonlocal done, last
        done += k
        now = time.monotonic()
        if now - last >= LOG_EVERY_S or done == total:
            last = now
            console.print(f"{description or what}: {done}/{total}", highlight=False)

    yield advance


def warn(message: str) -> None:
    console.print(f"[yellow]warning[/]: {message}")

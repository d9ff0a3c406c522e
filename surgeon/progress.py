"""A rich progress bar on stderr, or nothing (--json, --quiet, not a terminal)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[[str], None]


@contextlib.contextmanager
def bar(total: int, enabled: bool) -> Iterator[Advance]:
    """Yield advance(description): one unit of work done, next one described."""
    if not enabled:
        yield lambda _desc: None
        return
    columns = (TextColumn("{task.description:<40}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("capture", total=total)
        yield lambda desc: progress.update(task, advance=1, description=desc)

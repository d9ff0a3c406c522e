"""A rich progress bar on stderr, or nothing (--json, --quiet, not a terminal)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Progress:
    """advance(description): one unit of work done, the next one described;
    extend(n): n more units than planned (statistics collected mid-compile)."""

    def __init__(self, progress: Any = None, task: Any = None):
        self._progress, self._task = progress, task

    def __call__(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=description)

    def extend(self, n: int) -> None:
        if self._progress is not None:
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=total + n)


@contextlib.contextmanager
def bar(total: int, enabled: bool) -> Iterator[Progress]:
    if not enabled:
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    columns = (TextColumn("{task.description:<40}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("capture", total=total)
        yield Progress(progress, task)

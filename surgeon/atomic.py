"""Atomic outputs: write beside the destination, then rename over it.

A failure at any point leaves the previous file (or nothing) at the
destination, never a half-written one. Inside `transaction()` the renames wait
for the end of the block, so the outputs of one compile land together or not
at all: a later output that fails its own check (ONNX parity, HF reload)
does not leave the earlier ones behind, and a rename that fails at the very
end (or a signal arriving then) puts back what the earlier renames replaced.
Every directory written here carries surgeon's marker file (surgeon/outputs.py),
so a later compile knows it may replace it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from surgeon.outputs import MARKER, marker_text

Action = Callable[[], None]
# (commits, aborts) of the open transaction, or None: rename at once
_open: ContextVar[tuple[list[Callable[[], _Undo]], list[Action]] | None] = ContextVar(
    "_open", default=None)


@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """Stage every write in the block; rename all into place only if it succeeds."""
    if _open.get() is not None:  # nested: the outer block decides
        yield
        return
    commits: list[Callable[[], _Undo]] = []
    aborts: list[Action] = []
    token = _open.set((commits, aborts))
    try:
        yield
    except BaseException:
        _abort(aborts)
        raise
    finally:
        _open.reset(token)
    undos: list[_Undo] = []
    try:
        for commit in commits:
            undos.append(commit())
    except BaseException:
        for undo in reversed(undos):  # put back what the earlier renames replaced
            undo()
        _abort(aborts)
        raise
    for undo in undos:
        undo.done()


def _abort(aborts: list[Action]) -> None:
    for abort in reversed(aborts):  # later writes may sit in directories made earlier
        with contextlib.suppress(OSError):
            abort()


class _Undo:
    """Undoes one rename: the new copy goes back where it was staged (the abort then
    removes it) and the old one, kept aside in `holder`, returns. `done` drops the
    old copy once every rename of the transaction has succeeded."""

    def __init__(self, path: Path, staged: Path, holder: Path | None):
        self.path, self.staged, self.holder = path, staged, holder

    def __call__(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.staged)
        if self.holder is not None:
            os.replace(self.holder / "x", self.path)
        self.done()

    def done(self) -> None:
        if self.holder is not None:
            shutil.rmtree(self.holder, ignore_errors=True)
            self.holder = None


class _Several(_Undo):
    """The undo of renaming several files into one directory (ONNX and its sidecar)."""

    def __init__(self, undos: list[_Undo], staging: Path):
        self.undos, self.staging = undos, staging

    def __call__(self) -> None:
        for undo in reversed(self.undos):
            undo()
        shutil.rmtree(self.staging, ignore_errors=True)

    def done(self) -> None:
        for undo in self.undos:
            undo.done()
        shutil.rmtree(self.staging, ignore_errors=True)


def _swap(staged: Path, path: Path) -> _Undo:
    """Rename `staged` over `path`, keeping the old `path` aside until the transaction ends."""
    holder = None
    if os.path.lexists(path):
        holder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old",
                                       dir=path.parent))
        os.replace(path, holder / "x")
    try:
        os.replace(staged, path)
    except BaseException:
        if holder is not None:
            os.replace(holder / "x", path)
            shutil.rmtree(holder, ignore_errors=True)
        raise
    return _Undo(path, staged, holder)


def _land(commit: Callable[[], _Undo], abort: Action) -> None:
    pending = _open.get()
    if pending is None:
        commit().done()
    else:
        pending[0].append(commit)
        pending[1].append(abort)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parents(directory: Path) -> Action:
    """mkdir -p; returns an undo that removes the directories it made, if still empty."""
    made = []
    d = directory
    while not d.exists():
        made.append(d)  # deepest first
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)

    def undo() -> None:
        for m in made:
            with contextlib.suppress(OSError):
                m.rmdir()

    return undo


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    undo_parents = _make_parents(path.parent)
    fd, tmp = _made(undo_parents, tempfile.mkstemp, prefix=f".{path.name}.", suffix=".tmp",
                    dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    except BaseException:
        _unlink(tmp)
        undo_parents()
        raise
    _land(lambda: _swap(Path(tmp), path), lambda: (_unlink(tmp), undo_parents()))


def _made(undo_parents: Action, make: Callable[..., Any], **kwargs: Any) -> Any:
    """The staging file or directory; if it cannot be made, the parents made for it go."""
    try:
        return make(**kwargs)
    except BaseException:
        undo_parents()
        raise


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def digest(directory: Path) -> tuple[str, int]:
    """(sha256 over the directory's files in name order, total bytes)."""
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in directory.iterdir() if p.is_file()):
        data = f.read_bytes()
        h.update(data)
        size += len(data)
    return h.hexdigest(), size


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty sibling directory; on success it replaces `path` whole."""
    path = Path(path)
    undo_parents = _make_parents(path.parent)
    tmp = Path(_made(undo_parents, tempfile.mkdtemp, prefix=f".{path.name}.", suffix=".tmp",
                     dir=path.parent))
    try:
        (tmp / MARKER).write_text(marker_text(), encoding="utf-8")
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())  # some writers create 0600 files
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        undo_parents()
        raise
    _land(lambda: _swap(tmp, path),
          lambda: (shutil.rmtree(tmp, ignore_errors=True), undo_parents()))


@contextlib.contextmanager
def staged_files(directory: str | Path) -> Iterator[Path]:
    """Yield an empty hidden directory inside `directory`; on success each file
    written into it replaces its namesake in `directory` (files that must sit
    side by side under their final names, as ONNX and its external data)."""
    directory = Path(directory)
    undo_parents = _make_parents(directory)
    tmp = Path(_made(undo_parents, tempfile.mkdtemp, prefix=".staged.", suffix=".tmp",
                     dir=directory))
    try:
        yield tmp
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~_umask())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        undo_parents()
        raise

    def commit() -> _Undo:
        undos = [_swap(f, directory / f.name) for f in sorted(tmp.iterdir())]
        return _Several(undos, tmp)

    _land(commit, lambda: (shutil.rmtree(tmp, ignore_errors=True), undo_parents()))

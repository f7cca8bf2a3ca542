"""Replacing a whole directory of outputs so that readers never find it half-written.

A directory is built under a hidden name beside its target, then renamed into place. POSIX cannot rename a
directory over a non-empty one, so a previous version is first renamed aside and removed afterwards: between those
two renames (microseconds, on one filesystem) the target path does not exist. A reader that already opened a file
of the old version keeps reading it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sibling(target: Path, label: str) -> Path:
    """A hidden, unique path beside `target` (same filesystem, so a rename is atomic)."""
    return target.with_name(f".{target.name}.{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_dir(staged: Path, target: Path) -> None:
    """Put the directory `staged` at `target`, replacing what was there."""
    old = None
    if target.exists():
        old = sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(staged, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """An empty directory beside `target`; it replaces `target` when the block succeeds, and is removed if not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = sibling(target, "tmp")
    staged.mkdir()  # mode from the umask, like any other output directory (mkdtemp would make it private)
    try:
        yield staged
        replace_dir(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise

"""Files that appear whole or not at all: written beside their destination, renamed into place."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from sae_translate.errors import UserError


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file in ``path``'s folder, then rename it over ``path``: a
    reader, or a kill at any moment, sees the old file or the new one, never half of one. The
    temporary name keeps the suffix, since writers such as ``np.savez`` add theirs otherwise."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_writable(directory: Path, option: str = "--out") -> None:
    """Fail early on an output directory that cannot be written, without creating anything."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory {directory} is not writable; choose another {option}")

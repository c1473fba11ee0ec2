"""Atomic checkpoint directories and finding the last complete one.

A checkpoint is written into ``.tmp-<name>`` next to its final place, every file is fsynced,
and the directory is renamed into place (``os.replace``): a crash leaves either the previous
complete checkpoint or a ``.tmp-*`` directory that nothing ever loads. ``LATEST`` (replaced
atomically too) names the newest complete checkpoint; without it, the complete
``checkpoint-N`` directories (those holding ``COMPLETE_FILE``) are scanned.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

LATEST_FILE = "LATEST"
#: Written last into every checkpoint; a directory without it is never loaded.
COMPLETE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def temporary_dir(final: Path) -> Path:
    """The (emptied) staging directory for ``final``, in the same parent so rename is atomic."""
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """fsync everything in ``tmp``, then move it to ``final`` (replacing an older one)."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(tmp)
    if final.exists():  # rename cannot replace a non-empty directory: move the old one aside
        old = final.parent / f"{TMP_PREFIX}old-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync(final.parent)


def write_latest(output_dir: Path, checkpoint: Path) -> None:
    """Point ``output_dir/LATEST`` at ``checkpoint`` (write, fsync, rename)."""
    tmp = output_dir / f"{TMP_PREFIX}{LATEST_FILE}"
    with tmp.open("w") as f:
        f.write(checkpoint.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output_dir / LATEST_FILE)
    _fsync(output_dir)


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` is a finished checkpoint (renamed into place, state file inside)."""
    return (
        directory.is_dir()
        and not directory.name.startswith(TMP_PREFIX)
        and (directory / COMPLETE_FILE).is_file()
    )


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run's ``output_dir``, or ``None`` if there is none."""
    output_dir = Path(output_dir)
    pointer = output_dir / LATEST_FILE
    if pointer.is_file():
        named = output_dir / pointer.read_text().strip()
        if is_complete(named):
            return named
    found = [
        (int(m.group(1)), path)
        for path in output_dir.glob("checkpoint-*")
        if (m := _CHECKPOINT.fullmatch(path.name)) and is_complete(path)
    ]
    return max(found)[1] if found else None


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint directory from ``path``: a checkpoint itself or a run's ``output_dir``."""
    path = Path(path)
    if is_complete(path):
        return path
    found = latest_checkpoint(path) if path.is_dir() else None
    if found is None:
        raise FileNotFoundError(
            f"no complete checkpoint at {path}; pass a checkpoint directory (one holding "
            f"{COMPLETE_FILE}) or the output directory of a run that saved one (--save-steps)"
        )
    return found


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Which files of a folder the report wrote: the only ones it may ever delete.

Each output folder keeps `.report-files.json`, the names of the tables or figures the report wrote there.
Asked to regenerate the whole set (`--prune`), the report deletes the files of that list that the records
no longer give; a file it did not write (a hand-made figure, another tool's table) is never touched.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..train.records import atomic_write_text

MANIFEST = ".report-files.json"


def written_before(folder: Path) -> set[str]:
    try:
        names = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str) and "/" not in n} if isinstance(names, list) else set()


def update(folder: Path, written: list[Path], prune: bool) -> list[Path]:
    """Note `written` in the folder's list; with `prune`, delete what the report wrote before and did not
    write now. Returns the deleted paths."""
    folder = Path(folder)
    before, now = written_before(folder), {p.name for p in written}
    stale = sorted(before - now) if prune else []
    deleted = []
    for name in stale:
        path = folder / name
        if path.is_file():
            path.unlink()
            deleted.append(path)
    keep = now | (before - set(stale))
    atomic_write_text(folder / MANIFEST, json.dumps(sorted(keep), indent=0) + "\n")
    return deleted

"""One writer at a time: a folder that a stage writes (a processed folder, its features cache or
sync windows, a run folder) is held by the process writing it, and a second writer is refused
with the first one's process id, whether each came from the CLI, a script or a dashboard job.

A lock is ``<folder>/.writer-<part>.lock`` holding the writer's pid and the start time of that
process (so a recycled pid is not taken for the writer). A lock whose process is gone is stale
and the next writer replaces it. ``part`` names what is written: parts that ``overlap`` (by
default any two with the same name) exclude each other; preprocessing shards do not overlap
unless they are the same shard or one of them is the whole folder. Written by hand: filelock
and its kin block or time out, and neither says who holds the lock or lets disjoint shards share
a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

PREFIX, SUFFIX = ".writer-", ".lock"


class FolderBusy(RuntimeError):
    """Another live process is writing that part of the folder."""


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "" where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _holder(lock: Path) -> dict | None:
    """The live process holding ``lock`` ({pid, started, what, since}), or None (stale or gone)."""
    try:
        info = json.loads(lock.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: a writer between creating and filling it (fresh), else debris
        try:
            fresh = time.time() - lock.stat().st_mtime < 10
        except OSError:
            return None
        return {"pid": 0, "what": "starting", "since": 0} if fresh else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    if info.get("started") and _started(pid) and _started(pid) != info["started"]:
        return None  # the pid now belongs to another process
    return info


def _busy(folder: Path, holder: dict) -> FolderBusy:
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    return FolderBusy(f"'{folder}' is being written by process {holder['pid']} "
                      f"({holder.get('what', '?')}, since {since}); wait for it to end or stop it "
                      f"(a dashboard job: `dflab jobs cancel`), or write into another folder")


def _same(a: str, b: str) -> bool:
    return a == b


def shards_overlap(a: str, b: str) -> bool:
    """Parts named ``shard-I-of-N``: two shards overlap unless both split the folder the same way
    (same N) into different parts (I)."""
    try:
        (ia, na), (ib, nb) = ((int(x) for x in p.split("-")[1::2]) for p in (a, b))
    except ValueError:
        return a == b
    return na != nb or ia == ib


@contextlib.contextmanager
def writing(folder: str | Path, what: str, part: str = "all",
            overlaps: Callable[[str, str], bool] = _same) -> Iterator[Path]:
    """Hold ``folder``'s lock for ``part`` while the block runs; raises :class:`FolderBusy`
    naming the other writer's pid when a live process holds an overlapping part. Re-entrant in
    one process (a stage that calls another on the same folder)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f"{PREFIX}{part}{SUFFIX}"
    held = _holder(mine) if mine.exists() else None
    if held and held.get("pid") == os.getpid():
        yield mine  # already ours: the outer call releases it
        return

    def busy() -> None:
        for lock in folder.glob(f"{PREFIX}*{SUFFIX}"):
            other = lock.name[len(PREFIX):-len(SUFFIX)]
            if lock == mine or not overlaps(part, other):
                continue
            h = _holder(lock)
            if h and h.get("pid") != os.getpid():
                raise _busy(folder, h)

    busy()
    for _ in range(2):
        try:
            fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            h = _holder(mine)
            if h:
                raise _busy(folder, h) from None
            mine.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise FolderBusy(f"could not take the lock '{mine}'")
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "started": _started(os.getpid()), "what": what,
                   "since": time.time()}, fh)
    try:
        busy()  # a writer of an overlapping part that started at the same moment
        yield mine
    finally:
        mine.unlink(missing_ok=True)
        if created:  # a writer that failed before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                folder.rmdir()

"""The lab's files. Writing: JSON atomically (a crash leaves the old file or the new one), and
telling a full disk from other errors. Reading what the lab is given or wrote itself (JSON
records, event logs, the ``.pt`` files of the visual, forensic and sync models) so that any bytes
give one line that names the file and what to do, never a traceback: a :class:`DamagedFile` (a
``ValueError``, which the CLI prints as ``dflab <command>: error: ...``). ``.pt`` files are read
without ever running code (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

__all__ = ["DamagedFile", "reading", "read_json", "read_jsonl", "load_torch_file", "sha256_file",
           "dumps", "write_json", "disk_full", "free_mib"]


class DamagedFile(ValueError):
    """A file that exists but cannot be read as what it should be."""


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def reading(path: str | Path, what: str, redo: str,
            also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Inside the block, reading ``path`` and picking its fields apart: a malformed value or a
    missing or wrongly typed field becomes one :class:`DamagedFile` line, ``what`` naming the
    file's kind and ``redo`` how to get a good one; ``also``: the parser's own error types
    (protobuf's DecodeError, torch's RuntimeError on a tensor of the wrong shape). A missing
    file stays a FileNotFoundError."""
    try:
        yield
    except (DamagedFile, FileNotFoundError):
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError,
            RecursionError, EOFError, IsADirectoryError, *also) as exc:
        raise DamagedFile(f"{what} '{path}' is damaged ({_short(exc)}); {redo}") from None


def read_json(path: str | Path, what: str = "JSON file",
              redo: str = "delete it and re-run the step that wrote it") -> Any:
    """The JSON value in ``path`` (UTF-8); a file that is not JSON is a :class:`DamagedFile`."""
    path = Path(path)
    with reading(path, what, redo):
        return json.loads(path.read_bytes().decode("utf-8"))


def read_jsonl(path: str | Path, what: str = "JSON-lines file",
               redo: str = "delete it and re-run the step that wrote it") -> list[Any]:
    """The values of a JSON-lines file, one per non-blank line."""
    path = Path(path)
    with reading(path, what, redo):
        return [json.loads(ln) for ln in path.read_bytes().decode("utf-8").splitlines()
                if ln.strip()]


def load_torch_file(path: str | Path, what: str = "checkpoint", redo: str = "",
                    map_location: Any = "cpu") -> Any:
    """The object saved in ``path`` (plain tensors, numbers, text, lists and dicts only). A file
    whose unpickling would run code, build other objects, or that is empty, truncated or not a
    torch file is a DamagedFile; ``what`` names the file's kind and ``redo`` how to get a good one
    (both in the message). A missing file is a FileNotFoundError."""
    import torch

    path = Path(path)
    redo = redo or f"use another {what}"
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    size = path.stat().st_size
    if size == 0:
        raise DamagedFile(f"{what} '{path}' is empty (0 bytes): an interrupted copy or write; "
                         f"{redo}")
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head.startswith(b"PK\x03\x04") and head[:1] != b"\x80":
        kind = "an ONNX model (load it as .onnx)" if b"\x08" in head[:2] and \
            path.suffix != ".onnx" else f"not a torch {what}"
        raise DamagedFile(f"'{path}' is {kind}; {redo}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text is a paragraph (with advice to switch the guard off): keep the name of
        # what the file asked to build
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        named = f"it asks for {found.group(1)}" if found else "it holds more than tensors"
        raise DamagedFile(f"'{path}' was refused: loading it would run code or build objects that "
                         f"a dflab {what} never holds ({named}); {redo}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle or zip makes torch raise
        # anything (RuntimeError, EOFError, BadZipFile, UnicodeDecodeError, IndexError, ...)
        raise DamagedFile(f"{what} '{path}' ({size} bytes) is truncated or damaged "
                         f"({type(exc).__name__}); {redo}") from None


_HASHES: dict[tuple[str, int, float], str] = {}


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


# a pretty-printed list of numbers, and a list of such lists (boxes, landmark points): written
# on one line each. Only lists laid out over several lines match, and a JSON string never holds
# a raw newline, so no string value is touched.
_NUMBERS = re.compile(r"\[\n\s*(-?[\d.eE+-]+(?:,\n\s*-?[\d.eE+-]+)*)\n\s*\]")
_LISTS = re.compile(r"\[\n\s*(\[[^\n\[\]]*\](?:,\n\s*\[[^\n\[\]]*\])*)\n\s*\]")


def dumps(obj: Any) -> str:
    """JSON indented by two, with lists of numbers (and lists of them) kept on one line: a
    per-frame record with 68 landmarks takes 1.5 kB instead of 7."""
    text = json.dumps(obj, indent=2, default=str)
    text = _NUMBERS.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(","))
                        + "]", text)
    return _LISTS.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",\n"))
                      + "]", text)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(dumps(obj))
    os.replace(tmp, path)
    return path


def disk_full(exc: BaseException, folder: str | Path | None = None) -> bool:
    """Whether ``exc`` comes from a full disk (or quota): OSError ENOSPC/EDQUOT, or any OSError
    or RuntimeError while ``folder``'s disk has under 16 MiB free. torch's C++ writer says only
    "basic_ios::clear: iostream error" or "unexpected pos" when the disk fills (2026-12-04, a
    full tmpfs)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left" in str(exc):
        return True
    return folder is not None and isinstance(exc, (OSError, RuntimeError)) and \
        free_mib(folder) < 16


def free_mib(folder: str | Path) -> float:
    """Free space on ``folder``'s disk in MiB (0 when it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return 0.0

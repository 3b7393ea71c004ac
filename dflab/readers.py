"""Reading the files the lab is given or wrote itself (JSON records, event logs, the ``.pt``
files of the visual, forensic and sync models) so that any bytes give one line that names the
file and what to do, never a traceback: a :class:`DamagedFile` (a ``ValueError``, which the CLI
prints as ``dflab <command>: error: ...``). ``.pt`` files are read without ever running code
(``torch.load(weights_only=True)``)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

__all__ = ["DamagedFile", "reading", "read_json", "read_jsonl", "load_torch_file"]


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
    import pickle

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

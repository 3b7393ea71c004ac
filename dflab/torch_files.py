"""Reading the ``.pt`` files the lab writes (visual checkpoints, the forensic MLP, the sync model)
without ever running code: ``torch.load(weights_only=True)``, and every failure as one line that
names the file and what to do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def load_torch_file(path: str | Path, what: str = "checkpoint", redo: str = "",
                    map_location: Any = "cpu") -> Any:
    """The object saved in ``path`` (plain tensors, numbers, text, lists and dicts only). A file
    whose unpickling would run code, build other objects, or that is empty, truncated or not a
    torch file is a ValueError; ``what`` names the file's kind and ``redo`` how to get a good one
    (both in the message). A missing file is a FileNotFoundError."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    redo = redo or f"use another {what}"
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{what} '{path}' is empty (0 bytes): an interrupted copy or write; "
                         f"{redo}")
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head.startswith(b"PK\x03\x04") and head[:1] != b"\x80":
        kind = "an ONNX model (load it as .onnx)" if b"\x08" in head[:2] and \
            path.suffix != ".onnx" else f"not a torch {what}"
        raise ValueError(f"'{path}' is {kind}; {redo}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text is a paragraph (with advice to switch the guard off): keep the name of
        # what the file asked to build
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        named = f"it asks for {found.group(1)}" if found else "it holds more than tensors"
        raise ValueError(f"'{path}' was refused: loading it would run code or build objects that "
                         f"a dflab {what} never holds ({named}); {redo}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{what} '{path}' ({size} bytes) is truncated or damaged "
                         f"({type(exc).__name__}); {redo}") from None

"""Real data in the lab's own runs (``dflab demo --real`` / ``make real``).

On a folder laid out as ``../shared/data`` is (FF++ c23 clips in the official layout under
``ffpp/`` and ``ffpp_valtest/``, DFDC part folders under ``dfdc/``, face photos under ``faces/``):

- one labels CSV of every FF++ and DFDC clip (:func:`real_labels`): FF++ split by identity pair
  (a target X, its source Y, X.mp4, Y.mp4, X_Y and Y_X of every method stay together), drawn
  with a seed in fixed shares before any result is seen; every DFDC clip in test (no model here
  trains on DFDC, so it measures transfer);
- the detectors, trained from scratch on the CPU: the self-blended (SBI) network on real faces
  only (the train pairs' real clips and the photos), the ordinary network on the FF++ train
  pairs' real and fake clips, the forensic features' MLP on self-blended pseudo-fakes of the
  same real faces, and the fused verdict;
- one table: frame and video AUC of each, with 95% intervals and n, per manipulation method,
  under the SBI evaluation protocol.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["real_labels", "pair_of", "SPLIT_SHARES"]

#: shares of FF++ identity pairs in val and test, fixed before any result was seen
SPLIT_SHARES = {"val": 0.2, "test": 0.3}


def pair_of(video_id: str, pairs: list[tuple[str, str]]) -> str:
    """The identity pair a FF++ video belongs to, as 'X_Y' with X < Y: a fake 'X_Y' is its
    own pair; an original 'X' is the pair of any fake that names it (else itself)."""
    parts = video_id.split("_")
    if len(parts) == 2:
        return "_".join(sorted(parts))
    for a, b in pairs:
        if video_id in (a, b):
            return "_".join(sorted((a, b)))
    return video_id


def real_labels(shared: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write ``out`` (a labels CSV for the ``folder`` source) listing every FF++ clip under
    ``shared/ffpp*`` and every DFDC clip under ``shared/dfdc`` with absolute paths, label,
    method, dataset, compression, ``source_id`` (the identity pair; a DFDC clip's original) and
    split (FF++: drawn per pair, :data:`SPLIT_SHARES`, ``seed``; DFDC: test). Returns ``out``."""
    from .sources import VideoRecord, assign_splits, dfdc_source, ffpp_source

    shared = Path(shared)
    records: list[VideoRecord] = []
    for folder in sorted(shared.glob("ffpp*")):
        if (folder / "original_sequences").is_dir() or (folder / "manipulated_sequences").is_dir():
            # no split files: the pairs are re-split below
            records += [r for r in ffpp_source(folder, splits_dir=folder / "no-splits")
                        if r.exists]
    if not records:
        raise FileNotFoundError(f"no FF++ clips under '{shared}/ffpp*' (the official layout: "
                                f"original_sequences/, manipulated_sequences/)")
    fakes = [tuple(r.video_id.split("_")) for r in records if r.label == "fake"
             and re.fullmatch(r"\d+_\d+", r.video_id)]
    ffpp = [VideoRecord(r.path, r.video_id, r.label, r.method, "ffpp", r.compression,
                        pair_of(r.video_id, fakes), "") for r in records]
    ffpp = assign_splits(ffpp, SPLIT_SHARES["val"], SPLIT_SHARES["test"], seed)
    dfdc: list[VideoRecord] = []
    if (shared / "dfdc").is_dir():
        dfdc = [r for r in dfdc_source(shared / "dfdc") if r.exists]
        listed = {Path(r.path).resolve() for r in dfdc}
        # clips that no metadata.json lists (the samples folder) with their label in the
        # folder's manifest.csv, when it has one; else they are left out
        manifest = shared / "manifest.csv"
        labels = {}
        if manifest.is_file():
            with manifest.open(newline="") as fh:
                labels = {str((shared / row["path"]).resolve()): row for row in csv.DictReader(fh)}
        for p in sorted((shared / "dfdc").rglob("*.mp4")):
            row = labels.get(str(p.resolve()))
            if p.resolve() not in listed and row and row.get("label") in ("real", "fake"):
                dfdc.append(VideoRecord(str(p), p.stem, row["label"], row.get("method") or (
                    "original" if row["label"] == "real" else "dfdc"), "dfdc", "",
                    row.get("source_id") or p.stem))
    rows = [*ffpp, *(VideoRecord(r.path, r.video_id, r.label, r.method, "dfdc", "",
                                 r.source_id, "test") for r in dfdc)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "method", "dataset", "compression", "source_id",
                    "video_id", "split"])
        for r in rows:
            w.writerow([str(Path(r.path).resolve()), r.label, r.method, r.dataset,
                        r.compression, r.source_id, r.video_id, r.split])
    return out

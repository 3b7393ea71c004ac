"""Labelled video sources: turn a folder on disk into a list of :class:`VideoRecord`.

Registered sources (``dflab sources``):

- ``ffpp``: the FaceForensics++ layout, ``original_sequences/<youtube|actors>/<c>/videos/<id>.mp4``
  and ``manipulated_sequences/<Method>/<c>/videos/<target>_<source>.mp4``; splits from the official
  ``{train,val,test}.json`` id pairs (a ``splits/`` folder beside the data, or ``splits_dir``).
- ``dfdc``: Kaggle DFDC part folders, each with ``metadata.json`` (label, split, original).
- ``celebdf``: Celeb-DF v2 (``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/``), its
  ``List_of_testing_videos.txt`` as the test split.
- ``photos``: a folder of real face photos (one-frame videos), split per person.
- ``folder``: any folder with a ``labels.csv`` (columns ``path,label`` and optionally ``method,
  dataset, compression, source_id, video_id, split``); the demo set is one.
- ``demo``: the embedded demo set (a ``folder`` source).

A video listed in metadata but missing on disk is returned with ``exists=False`` so the pipeline
reports it instead of failing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from dflab.core.files import DamagedFile, read_json
from dflab.core.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["VideoRecord", "SOURCES", "list_videos", "video_uid", "load_ffpp_splits", "group_split",
           "VIDEO_EXTS", "IMAGE_EXTS", "check_split_leaks"]

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

SOURCES: Registry = Registry("video source")


def video_uid(dataset: str, method: str, compression: str, video_id: str) -> str:
    """A video's id across the lab: ``dataset/method/compression/video_id`` (``na`` for no
    compression); its processed folder, index rows and predictions are keyed by it."""
    return f"{dataset}/{method}/{compression or 'na'}/{video_id}"


@dataclass
class VideoRecord:
    path: str  # absolute path of the video (or image)
    video_id: str  # "004_982", "brtujopkby"
    label: str  # "real" | "fake"
    method: str  # "original" for real videos; FF++ method; "dfdc" for DFDC fakes
    dataset: str  # "ffpp", "dfdc", "demo", or the folder's own name
    compression: str = ""  # "c23", "c40", "raw", "" when unknown
    source_id: str = ""  # the id of the real video this one derives from (itself when real)
    split: str = ""  # "train" | "val" | "test" | "" when unassigned
    exists: bool = True
    extra: dict = field(default_factory=dict)  # any other metadata columns (demographics, ...)

    @property
    def uid(self) -> str:
        """Unique across datasets and methods: equal ids under different methods never merge."""
        return video_uid(self.dataset, self.method, self.compression, self.video_id)

    @property
    def is_image(self) -> bool:
        return Path(self.path).suffix.lower() in IMAGE_EXTS

    def to_dict(self) -> dict:
        return asdict(self)


def group_split(group: str, val: float = 0.1, test: float = 0.1, salt: str = "dflab") -> str:
    """A stable split for a group id (a DFDC original and all its fakes share one)."""
    h = int(hashlib.sha1(f"{salt}:{group}".encode()).hexdigest()[:8], 16) / 2**32
    return "test" if h < test else "val" if h < test + val else "train"


def read_ffpp_split_files(splits_dir: str | Path) -> dict[str, list]:
    """The official FF++ ``train/val/test.json`` files: split -> list of ``[target, source]``
    id pairs (the one reader of those files; ``acquire`` plans downloads with it too)."""
    out = {}
    for split in ("train", "val", "test"):
        f = Path(splits_dir) / f"{split}.json"
        if not f.exists():
            raise FileNotFoundError(f"FF++ split file '{f}' is missing; put the official "
                                    f"train/val/test.json there (dflab download ffpp fetches them)")
        pairs = read_json(f, "FF++ split file", "put the official file there again (dflab "
                          "download ffpp fetches it)")
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and all(isinstance(v, (str, int)) for v in p) for p in pairs):
            raise DamagedFile(f"FF++ split file '{f}' is not a list of [target, source] id pairs; "
                              f"put the official file there again (dflab download ffpp fetches "
                              f"it)")
        out[split] = pairs
    return out


def load_ffpp_splits(splits_dir: str | Path) -> dict[str, str]:
    """id -> split from the official split files (every id of every pair)."""
    return {str(vid): split for split, pairs in read_ffpp_split_files(splits_dir).items()
            for pair in pairs for vid in pair}


def check_split_leaks(records: list[VideoRecord]) -> None:
    """Raise if any source id (a real video and everything made from it) sits in two splits."""
    seen: dict[str, set[str]] = {}
    for r in records:
        if r.split:
            seen.setdefault(f"{r.dataset}/{r.source_id or r.video_id}", set()).add(r.split)
    leaks = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    if leaks:
        some = ", ".join(f"{k} in {v}" for k, v in list(leaks.items())[:5])
        raise ValueError(f"split leak: {len(leaks)} source videos appear in more than one split "
                         f"({some}); fix the split files or labels.csv")


@SOURCES.register("ffpp", help="FaceForensics++ folder layout with official id-pair splits")
def ffpp_source(root: str | Path, splits_dir: str | Path = "", methods: list[str] | None = None,
                compressions: list[str] | None = None, splits: bool = True
                ) -> list[VideoRecord]:
    """``splits`` False: no split files are read (the caller draws its own, by id pair)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"FF++ folder '{root}' does not exist")
    sdir = Path(splits_dir) if splits_dir else root / "splits"
    split_of = load_ffpp_splits(sdir) if splits and (sdir / "train.json").exists() else {}
    if not split_of and splits:
        log.warning("no FF++ splits in %s: records have no split", sdir)
    records = []
    for p in sorted(root.glob("original_sequences/*/*/videos/*")):
        if p.suffix.lower() not in VIDEO_EXTS:
            continue
        comp = p.parts[-3]
        if compressions and comp not in compressions:
            continue
        vid = p.stem
        records.append(VideoRecord(str(p), vid, "real", "original", "ffpp", comp, vid,
                                   split_of.get(vid, ""), extra={"subset": p.parts[-4]}))
    for p in sorted(root.glob("manipulated_sequences/*/*/videos/*")):
        if p.suffix.lower() not in VIDEO_EXTS:
            continue
        method, comp = p.parts[-4], p.parts[-3]
        if methods and method not in methods or compressions and comp not in compressions:
            continue
        target = re.split(r"[_]", p.stem)[0]
        records.append(VideoRecord(str(p), p.stem, "fake", method, "ffpp", comp, target,
                                   split_of.get(target, "")))
    return records


@SOURCES.register("dfdc", help="Kaggle DFDC part folders with metadata.json")
def dfdc_source(root: str | Path, val: float = 0.1, test: float = 0.1) -> list[VideoRecord]:
    """Every ``metadata.json`` below ``root``. DFDC's own split field says 'train' for the whole
    training set, so splits are drawn per original (a fake never leaves its original's split)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DFDC folder '{root}' does not exist")
    records = []
    metas = sorted(root.rglob("metadata.json"))
    if not metas:
        raise FileNotFoundError(f"no metadata.json under '{root}': is this a DFDC part folder?")
    for meta in metas:
        entries = read_json(meta, "DFDC metadata", "re-download that part")
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise DamagedFile(f"DFDC metadata '{meta}' is not a mapping of file name to "
                              f"{{label, original, ...}}; re-download that part")
        for name, info in sorted(entries.items()):
            p = meta.parent / name
            label = str(info.get("label", "")).upper()
            if label not in ("REAL", "FAKE"):
                raise ValueError(f"'{meta}': {name} has label {info.get('label')!r}; expected "
                                 f"REAL or FAKE")
            fake = label == "FAKE"
            original = Path(str(info.get("original") or name)).stem if fake else p.stem
            extra = {k: v for k, v in info.items() if k not in ("label", "split", "original")}
            extra["part"] = meta.parent.name
            records.append(VideoRecord(str(p), p.stem, "fake" if fake else "real",
                                       "dfdc" if fake else "original", "dfdc", "", original,
                                       group_split(original, val, test), p.exists(), extra))
    return records


def read_labels_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a labels CSV as dicts: UTF-8 with or without a BOM (Excel), ``,`` ``;`` or
    tab separated (detected from the header), any line endings."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"'{path}' is not UTF-8 text ({exc}); save it as CSV UTF-8") from None
    header = text.splitlines()[0] if text.strip() else ""
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=counts.get) if any(counts.values()) else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    fields = [f.strip() for f in reader.fieldnames or []]
    missing = {"path", "label"} - set(fields)
    if missing:
        sep = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
        raise ValueError(f"'{path}' lacks the column(s) {sorted(missing)} (read as "
                         f"{sep}-separated, header {fields}); it needs path,label and may have "
                         f"method,dataset,compression,source_id,split")
    rows = []
    for row in reader:
        if None in row:  # more cells than the header has columns
            raise ValueError(f"'{path}' line {reader.line_num}: {len(fields) + len(row[None])} "
                             f"cells under a header of {len(fields)} columns; quote values "
                             f"that hold a '{delimiter}'")
        rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
    return rows


def _unique_ids(records: list[VideoRecord], base: Path) -> list[VideoRecord]:
    """Files whose default id (the file stem) would collide (``a/x.mp4`` and ``b/x.mp4``,
    ``x.mp4`` and ``x.jpg``) get their path below ``base`` as id, so no two files share a
    processed folder; the change is logged."""
    counts = Counter(r.uid for r in records)
    out = []
    for r in records:
        if counts[r.uid] > 1 and r.video_id == Path(r.path).stem:
            try:
                rel = Path(r.path).relative_to(base)
            except ValueError:
                rel = Path(r.path)
            vid = re.sub(r"[^\w-]+", "_", rel.as_posix()).strip("_")
            log.warning("'%s' shares its name with another file; its id is '%s'", r.path, vid)
            r = replace(r, video_id=vid, source_id=vid if r.source_id == r.video_id
                        else r.source_id)
        out.append(r)
    return out


def assign_splits(records: list[VideoRecord], val: float, test: float, seed: int = 0
                  ) -> list[VideoRecord]:
    """Give records without a split one: whole groups (a source id and everything made from
    it; else one video) go to train, val or test, seeded, in the given shares, split per class
    mix so that val and test get real and fake groups alike. Records with a split keep it."""
    given = {r.source_id: r.split for r in records if r.split}
    groups: dict[str, set[str]] = {}
    for r in records:
        if not r.split and r.source_id not in given:
            groups.setdefault(r.source_id, set()).add(r.label)
    chosen: dict[str, str] = {}
    rng = random.Random(seed)
    for mix in sorted({tuple(sorted(v)) for v in groups.values()}):
        ids = sorted(g for g, v in groups.items() if tuple(sorted(v)) == mix)
        rng.shuffle(ids)
        n_test = round(test * len(ids)) if len(ids) > 2 else 0
        n_val = round(val * len(ids)) if len(ids) > 2 else 0
        for k, g in enumerate(ids):
            chosen[g] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return [r if r.split else replace(r, split=given.get(r.source_id) or chosen[r.source_id])
            for r in records]


@SOURCES.register("folder", help="any folder with labels.csv (path,label[,method,split,...])")
def folder_source(root: str | Path, labels: str | Path = "", val: float = 0.15,
                  test: float = 0.15, seed: int = 0) -> list[VideoRecord]:
    """Videos and images listed in a labels CSV. Without a split column, splits are drawn by
    :func:`assign_splits` (``val``, ``test``, ``seed``) and said in one log line."""
    root = Path(root)
    labels_path = Path(labels) if labels else root / "labels.csv"
    if not labels_path.exists():
        raise FileNotFoundError(f"no labels file '{labels_path}'; a folder source needs a CSV with "
                                f"at least the columns path,label (label: real or fake)")
    rows = read_labels_csv(labels_path)
    known = {"path", "label", "method", "dataset", "compression", "source_id", "video_id",
             "split", "official_split"}
    records: list[VideoRecord] = []
    seen: dict[Path, tuple[int, str]] = {}  # resolved path -> (line, label)
    for i, row in enumerate(rows, start=2):
        label = row["label"].lower()
        if label in ("0", "original"):
            label = "real"
        elif label in ("1", "manipulated"):
            label = "fake"
        if label not in ("real", "fake"):
            raise ValueError(f"'{labels_path}' line {i}: label {row['label']!r} is not real/fake")
        if "\0" in row["path"]:
            raise ValueError(f"'{labels_path}' line {i}: the path {row['path']!r} holds a NUL "
                             f"character")
        p = Path(row["path"])
        p = p if p.is_absolute() else labels_path.parent / p
        if p.suffix.lower() not in VIDEO_EXTS | IMAGE_EXTS:
            log.warning("%s line %d: %s is neither a video nor an image; skipped", labels_path, i, p)
            continue
        key = p.resolve()
        if key in seen:
            line, first = seen[key]
            if first != label:
                raise ValueError(f"'{labels_path}': '{row['path']}' is listed as {first} (line "
                                 f"{line}) and as {label} (line {i}); give each file one label")
            log.warning("%s line %d: '%s' is listed again (line %d); the repeat is skipped",
                        labels_path, i, row["path"], line)
            continue
        seen[key] = (i, label)
        method = row.get("method") or ("original" if label == "real" else "unknown")
        vid = row.get("video_id") or p.stem
        split = row.get("split") or row.get("official_split") or ""
        if split and split not in ("train", "val", "test"):
            raise ValueError(f"'{labels_path}' line {i}: split {split!r} is not train, val or "
                             f"test (or leave it empty to have splits drawn)")
        records.append(VideoRecord(
            str(p), vid, label, method, row.get("dataset") or root.name,
            row.get("compression", ""), row.get("source_id") or vid, split, p.exists(),
            {k: v for k, v in row.items() if k not in known and v}))
    records = _unique_ids(records, labels_path.parent)
    unsplit = [r for r in records if not r.split]
    if unsplit:
        records = assign_splits(records, val, test, seed)
        counts = {s: sum(1 for r in records if r.split == s) for s in ("train", "val", "test")}
        log.info("%s: %d videos had no split; drawn by source id (else video), seed %d, val %.2f "
                 "test %.2f: train %d, val %d, test %d", labels_path, len(unsplit), seed, val,
                 test, counts["train"], counts["val"], counts["test"])
    return records


CELEBDF_TEST_LIST = "List_of_testing_videos.txt"


@SOURCES.register("celebdf", help="Celeb-DF v2 folder layout with its List_of_testing_videos.txt")
def celebdf_source(root: str | Path, val: float = 0.1, seed: int = 0) -> list[VideoRecord]:
    """Celeb-DF v2: ``Celeb-real/`` and ``YouTube-real/`` (real), ``Celeb-synthesis/`` (fakes
    named ``id<target>_id<source>_<n>``), videos directly inside or in a ``videos/`` folder.
    The videos named in ``List_of_testing_videos.txt`` (lines ``<1 real | 0 fake> <path>``) are
    the test split, as every published Celeb-DF number uses; the others are drawn into train and
    val per celebrity (the target's id), so a person never spans both."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Celeb-DF folder '{root}' does not exist")
    listing = root / CELEBDF_TEST_LIST
    test: dict[str, str] = {}
    if listing.is_file():
        for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or parts[0] not in ("0", "1"):
                raise ValueError(f"'{listing}' line {n}: {line!r} is not '<1|0> <folder>/<file>' "
                                 f"(1 real, 0 fake)")
            test[Path(parts[1].strip()).stem] = "real" if parts[0] == "1" else "fake"
    else:
        log.warning("no %s in %s: no video is in the test split", CELEBDF_TEST_LIST, root)
    folders = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
    records = []
    for folder, label in folders.items():
        base = next((d for d in (root / folder / "videos", root / folder) if d.is_dir()), None)
        if base is None:
            continue
        for p in sorted(base.glob("*")):
            if p.suffix.lower() not in VIDEO_EXTS:
                continue
            person = p.stem.split("_")[0] if folder != "YouTube-real" else f"yt{p.stem}"
            if p.stem in test and test[p.stem] != label:
                raise ValueError(f"'{listing}' labels {p.stem} {test[p.stem]}, but it lies in "
                                 f"{folder}/ ({label})")
            split = "test" if p.stem in test else group_split(person, val, 0.0,
                                                                  salt=f"dflab-celebdf-{seed}")
            method = "original" if label == "real" else "celebdf"
            records.append(VideoRecord(str(p), p.stem, label, method, "celebdf", "", person,
                                       split, extra={"subset": folder}))
    if not records:
        raise FileNotFoundError(f"no Celeb-DF videos under '{root}' (expected Celeb-real/, "
                                f"YouTube-real/, Celeb-synthesis/)")
    return records


@SOURCES.register("photos", help="a folder of real face photos (training from real faces "
                  "only: self-blended pseudo-fakes)")
def photos_source(root: str | Path, labels: str | Path = "", val: float = 0.1, test: float = 0.1,
                  seed: int = 0, limit: int = 0) -> list[VideoRecord]:
    """Every image below ``root``, each a one-frame real "video". The person is the
    ``identity`` column of ``list.csv`` (or ``labels``) when there is one (path, identity),
    else the image's folder (``person/001.jpg``), else the file itself; splits are drawn per
    person (:func:`group_split` salted with ``seed``), so one person never spans two splits.
    ``limit``: at most this many images, drawn evenly over the sorted list (0: all)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"photo folder '{root}' does not exist")
    listing = Path(labels) if labels else root / "list.csv"
    who: dict[str, str] = {}
    if listing.is_file():
        with listing.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            if row.get("path"):
                who[str((listing.parent / row["path"]).resolve())] = row.get("identity", "")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) below '{root}'")
    if limit and len(files) > limit:
        files = [files[k] for k in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    records = []
    for p in files:
        rel = p.relative_to(root)
        ident = who.get(str(p.resolve())) or (rel.parent.as_posix() if len(rel.parts) > 1
                                               else p.stem)
        vid = re.sub(r"[^\w-]+", "_", rel.with_suffix("").as_posix()).strip("_")
        records.append(VideoRecord(str(p), vid, "real", "original", root.name, "", ident,
                                   group_split(ident, val, test, salt=f"dflab-photos-{seed}")))
    return records


@SOURCES.register("demo", help="the embedded demo set (build it with `dflab demo-data`)")
def demo_source(root: str | Path) -> list[VideoRecord]:
    if not (Path(root) / "labels.csv").exists():
        raise FileNotFoundError(f"no demo set at '{root}'; build it with `dflab demo-data --out "
                                f"{root}`")
    return folder_source(root)


def list_videos(source: str, root: str | Path, **kwargs) -> list[VideoRecord]:
    """Records of a registered source, checked for split leaks."""
    records = SOURCES.create(source, root=root, **kwargs)
    check_split_leaks(records)
    return records

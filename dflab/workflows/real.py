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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dflab.core.events import Callback, CancelToken, StageClock
from dflab.core.files import read_json, write_json
from dflab.core.metrics import apply_protocol, binary_metrics, format_auc
from dflab.core.runs import create_run_dir
from dflab.data.landmarks import dlib_available
from dflab.data.sources import VideoRecord, assign_splits, dfdc_source, ffpp_source
from dflab.visual.clip_cues import clip_scores
from dflab.visual.pseudo_fakes import write_pseudo_fake_folder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from dflab.lab import Lab

log = logging.getLogger(__name__)

__all__ = ["real_labels", "pair_of", "run_real", "real_clips", "train_once", "photo_subset",
           "format_real_report", "SPLIT_SHARES", "REAL_SETTINGS", "COLUMNS"]

#: shares of FF++ identity pairs in val and test, fixed before any result was seen
SPLIT_SHARES = {"val": 0.2, "test": 0.3}

#: the settings of every run here, over the cpu preset (flips and mild crops only: colour,
#: rotation and JPEG augmentation cost more CPU per image than the network), fixed before any
#: result was seen: 32 evenly spaced frames per clip and the SBI protocol (as the field
#: reports); one small timm backbone for both networks (MobileNetV3-small trains at about 150
#: images/s on 2 cores at 112 px; the cpu preset's resnet10t at 40)
REAL_SETTINGS = {
    "env.seed": 0, "env.deterministic": True, "env.workers": 0,
    "preprocess.every_nth": 0, "preprocess.num_frames": 32, "preprocess.audio": False,
    "preprocess.landmarks": "auto", "eval.protocol": "sbi", "eval.frames_per_video": 32,
    "model.backbone": "mobilenetv3_small_100", "model.pretrained": False,
    "model.input_size": 112, "model.head_hidden": 64, "train.batch_size": 32,
    "train.accumulation": 1, "train.lr": 2e-3, "train.select_on": "val_auc",
    "train.patience": 20,
}

#: the table's columns: (name, the test videos it rests on)
COLUMNS = ["FF++", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "DFDC"]


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
    shared = Path(shared)
    records: list[VideoRecord] = []
    for folder in sorted(shared.glob("ffpp*")):
        if (folder / "original_sequences").is_dir() or (folder / "manipulated_sequences").is_dir():
            # no split files: the pairs are re-split below
            records += [r for r in ffpp_source(folder, splits=False) if r.exists]
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


def _cells(frames: "pd.DataFrame", faceless: "pd.DataFrame", frames_per_video: int,
           n_boot: int, seed: int) -> dict[str, Any]:
    """Frame and video AUC (SBI protocol) over every test video, and video AUC per column of
    :data:`COLUMNS`: FF++ = FF++ fakes against FF++ reals; a method = its fakes against every
    test real (FF++ and DFDC), as the lab's per-method reports count them."""
    scored, videos = apply_protocol(frames, "sbi", frames_per_video, faceless)
    out = _video_cells(videos, n_boot, seed)
    out["frame"] = binary_metrics(scored["target"], scored["prob"], groups=scored["uid"],
                                  n_boot=n_boot, seed=seed)
    out["frame"]["n_videos"] = int(scored["uid"].nunique())
    return out


def _video_cells(videos: "pd.DataFrame", n_boot: int, seed: int) -> dict[str, Any]:
    """The video AUC over every row of ``videos`` (one per video, ``prob``) and per column of
    :data:`COLUMNS`; ``frame`` None (a clip-level score has no frame AUC)."""
    out: dict[str, Any] = {"frame": None,
                           "video": binary_metrics(videos["target"], videos["prob"],
                                                   groups=videos["uid"], n_boot=n_boot,
                                                   seed=seed)}
    reals = videos[videos["target"] == 0]
    for col in COLUMNS:
        if col == "FF++":
            part = videos[videos["dataset"] == "ffpp"]
        else:
            method = "dfdc" if col == "DFDC" else col
            part = videos[(videos["target"] == 0) | (videos["method"] == method)]
        if part["target"].nunique() < 2:
            out[col] = None
            continue
        out[col] = binary_metrics(part["target"], part["prob"], groups=part["uid"],
                                  n_boot=n_boot, seed=seed)
    out["n_real"] = int(len(reals))
    return out


def _stack(val: "pd.DataFrame", test: "pd.DataFrame", seed: int) -> np.ndarray:
    """The fused p(fake) of ``test``: a logistic regression over the logits of the visual and
    the forensic probability (columns ``prob_visual``, ``prob_forensic``), fitted on ``val``
    (pseudo-fakes: the fused detector never sees a real fake either)."""
    from sklearn.linear_model import LogisticRegression

    def logits(d):
        p = np.clip(d[["prob_visual", "prob_forensic"]].to_numpy(float), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    model = LogisticRegression(random_state=seed).fit(logits(val), val["target"])
    return model.predict_proba(logits(test))[:, 1]


#: face photos used by default: as many as keep `make real` within 15 minutes on 2 cores
DEFAULT_PHOTOS = 3000


def train_once(lab: "Lab", processed: Path, name: str, **cb: Any) -> Path:
    """``<runs>/train-<name>``: trained now, resumed from its last checkpoint, or kept when a
    run of that name already finished (so ``--name`` resumes an interrupted ``--real``).
    ``cb``: ``callbacks`` and ``cancel`` for :meth:`Lab.train`."""
    run = lab.paths["runs"] / f"train-{name}"
    if (run / "train_summary.json").is_file():
        return run
    resume = (run / "checkpoints" / "last.pt").is_file()
    return lab.train(processed, name, resume=resume, **cb).run


def photo_subset(records: list, count: int) -> list:
    """At most ``count`` of ``records`` (0, less, or more than there are: all), drawn evenly
    over the list as it is sorted, so a smaller set is spread over the same people."""
    if count <= 0 or count >= len(records):
        return list(records)
    return [records[k] for k in np.linspace(0, len(records) - 1, count).round().astype(int)]


def real_clips(lab: "Lab", shared: Path, overrides: dict[str, Any] | None = None,
               **cb: Any) -> tuple["Lab", Path, Any]:
    """(the Lab of :data:`REAL_SETTINGS` and ``overrides`` on ``lab``'s data root, the labels
    CSV of :func:`real_labels`, the preprocessed clips ``<processed>/real_clips``): the set-up
    every run on the shared clips starts from. ``cb``: ``callbacks`` and ``cancel``."""
    base = lab.derive({**REAL_SETTINGS, **(overrides or {})}, preset="cpu")
    root = lab.paths["data_root"] / "real"
    labels = real_labels(shared, root / "labels.csv", base.cfg.data.split_seed)
    clips = base.preprocess("folder", root, labels=str(labels),
                            out=lab.paths["processed"] / "real_clips", **cb)
    return base, labels, clips


def run_real(lab: "Lab", shared: str | Path, name: str = "", epochs: int = 4,
             ordinary_epochs: int = 8, photos: int = DEFAULT_PHOTOS,
             callbacks: list[Callback] | None = None, cancel: CancelToken | None = None,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The detectors of this module's docstring on ``shared`` (a folder laid out as
    ../shared/data), from scratch on this machine; returns the report (also written to
    ``<runs>/real-<name>/real_report.json``). ``photos``: at most this many face photos, drawn
    evenly over the sorted list (0: all). ``overrides``: settings over :data:`REAL_SETTINGS`
    (a quicker check: fewer frames per clip)."""
    # Long on purpose: the stages in the order they run, each a Lab call and a timing lap, read top
    # to bottom like the report it builds.
    import pandas as pd

    from dflab.data.datasets import faceless_frames

    shared = Path(shared)
    if not (shared / "ffpp").is_dir():
        raise FileNotFoundError(f"'{shared}' has no ffpp/ folder: give the folder laid out as "
                                f"../shared/data (ffpp/, ffpp_valtest/, dfdc/, faces/)")
    cb = {"callbacks": callbacks, "cancel": cancel}
    clock = StageClock()
    name = name or time.strftime("%Y%m%d-%H%M%S")
    base, labels, clips = real_clips(lab, shared, overrides, **cb)
    seed = base.cfg.env.seed
    clock.lap("preprocess clips")
    faces_dir = shared / "faces"
    photo_lab = base.derive({"preprocess.save_frames": False})
    records = photo_subset(photo_lab.list_videos("photos", faces_dir), photos)
    face_set = photo_lab.preprocess("photos", faces_dir, records=records,
                                    out=lab.paths["processed"] / f"real_photos_{len(records)}",
                                    **cb)
    clock.lap("preprocess photos")

    sbi_lab = base.derive({"train.pseudo_fakes": "sbi", "train.epochs": epochs,
                           "train.extra_reals": [str(face_set.out)]})
    sbi = train_once(sbi_lab, clips.out, f"real-sbi-{name}", **cb)
    clock.lap("SBI network")
    ordinary = train_once(base.derive({"train.epochs": ordinary_epochs, "train.balance": True}),
                          clips.out, f"real-ffpp-{name}", **cb)
    clock.lap("ordinary network")

    pf = lab.paths["processed"] / f"real_pseudo_fakes_{len(records)}"
    write_pseudo_fake_folder([(clips.out, ("train", "val")), (face_set.out, ())], pf, seed=seed,
                             **cb)
    base.features(pf, **cb)
    forensic = lab.paths["runs"] / f"forensic-real-pf-{name}"
    if not (forensic / "eval_test.json").is_file():  # a re-run with the same name keeps it
        forensic = base.train_forensic(pf, f"real-pf-{name}", **cb).run
    clock.lap("forensic MLP on pseudo-fakes")

    # every model scored on the clips' test split (and, to fit the fusion, on pseudo-fake val)
    scores = {}
    for key, run in (("sbi", sbi), ("ordinary", ordinary)):
        tag = base.evaluate(run, clips.out, "test", **cb).split
        scores[key] = pd.read_csv(run / f"predictions_{tag}.csv", dtype={"video_id": str},
                                  keep_default_na=False)
    ftag = base.score_forensic(forensic, clips.out, "test", **cb).split
    f_test = pd.read_csv(forensic / f"predictions_{ftag}.csv", dtype={"video_id": str},
                         keep_default_na=False)
    scores["forensic"] = f_test.assign(prob=f_test["prob_forensic"])
    vtag = base.evaluate(sbi, pf, "val", **cb).split  # pseudo-fake val for the stacker
    v_vis = pd.read_csv(sbi / f"predictions_{vtag}.csv", dtype={"video_id": str},
                        keep_default_na=False)
    fvtag = base.score_forensic(forensic, pf, "val", **cb).split
    f_val = pd.read_csv(forensic / f"predictions_{fvtag}.csv", dtype={"video_id": str},
                        keep_default_na=False)
    key = ["crop_path"]
    val = v_vis.rename(columns={"prob": "prob_visual"}).merge(
        f_val[key + ["prob_forensic"]], on=key)
    test = scores["sbi"].rename(columns={"prob": "prob_visual"}).merge(
        f_test[key + ["prob_forensic"]], on=key)
    scores["fused"] = test.assign(prob=_stack(val, test, seed))
    clock.lap("evaluate")

    faceless = faceless_frames(clips.out, "test")
    n_boot = base.cfg.eval.bootstrap
    per_video = base.cfg.eval.frames_per_video
    rows = {m: _cells(scores[m], faceless, per_video, n_boot, seed)
            for m in ("sbi", "forensic", "fused", "ordinary")}
    # the training-free clip cues, each alone (higher = fake, fixed in dflab.visual.clip_cues)

    if dlib_available():
        cues = clip_scores(clips.out, "test")
        for cue in ("identity_drift", "landmark_jitter"):
            v = cues[cues[cue].notna()]
            z = (v[cue] - v[cue].median()) / (v[cue].std() or 1.0)
            rows[cue] = _video_cells(v.assign(prob=1 / (1 + np.exp(-z))), n_boot, seed)
        clock.lap("clip cues")
    index = pd.read_csv(clips.out / "index.csv", dtype={"video_id": str})
    test_videos = index[index["split"] == "test"].drop_duplicates("uid")
    report = {
        "data": {"shared": str(shared), "labels": str(labels),
                 "clips": {s: int((index.drop_duplicates("uid")["split"] == s).sum())
                           for s in ("train", "val", "test")},
                 "test_videos": test_videos.groupby(["dataset", "method"]).size().rename(
                     "videos").reset_index().to_dict("records"),
                 "photos": len(records), "photo_people": len({r.source_id for r in records}),
                 "split_shares": SPLIT_SHARES},
        "settings": {**REAL_SETTINGS, **(overrides or {}), "sbi_epochs": epochs,
                     "ordinary_epochs": ordinary_epochs},
        "preprocess": {"clip_coverage": clips.coverage,
                       "clip_landmarks": clips.stats.get("landmark_coverage"),
                       "photo_coverage": face_set.coverage,
                       "photo_landmarks": face_set.stats.get("landmark_coverage")},
        "runs": {"sbi": str(sbi), "ordinary": str(ordinary), "forensic": str(forensic),
                 "pseudo_fakes": str(pf)},
        "train": {k: read_json(Path(r) / "train_summary.json") for k, r in
                  (("sbi", sbi), ("ordinary", ordinary))},
        "rows": rows,
        "seconds_per_stage": clock.stages,
        "seconds": clock.total,
    }
    out = create_run_dir(lab.paths["runs"], "real", base.cfg, name)
    write_json(out / "real_report.json", report)
    report["report_path"] = str(out / "real_report.json")
    return report


ROW_NAMES = {"sbi": "SBI network (real faces only)",
             "forensic": "forensic MLP (pseudo-fakes)",
             "fused": "SBI + forensic (pseudo-fakes)",
             "identity_drift": "identity drift (no training)",
             "landmark_jitter": "landmark jitter (no training)",
             "ordinary": "ordinary network (FF++ fakes)"}


def format_real_report(r: dict[str, Any]) -> str:
    """The table ``dflab demo --real`` prints."""
    d = r["data"]
    lines = [f"real data: {sum(d['clips'].values())} clips ({d['clips']}), split by identity "
             f"pair; {d['photos']} face photos of {d['photo_people']} people",
             "test videos: " + ", ".join(f"{t['dataset']}/{t['method']} {t['videos']}"
                                         for t in d["test_videos"]),
             f"protocol: SBI ({r['settings']['eval.frames_per_video']} frames per video, per "
             f"frame the max over faces, no face = 0.5); 95% intervals over videos",
             f"{'model':34s} {'frame AUC':22s} {'video AUC':22s} " + " ".join(
                 f"{c:>14s}" for c in COLUMNS)]
    for key, name in ROW_NAMES.items():
        row = r["rows"].get(key)
        if row is None:  # the clip cues need the landmarks extra
            continue
        cells = [(f"{row[c]['auc']:.2f} (n={row[c]['n']})" if row[c] else "n/a").rjust(14)
                 for c in COLUMNS]
        frame = format_auc(row["frame"]) if row["frame"] else "n/a (per clip)"
        lines.append(f"{name:34s} {frame:22s} {format_auc(row['video']):22s} "
                     + " ".join(cells))
    lines.append("per-column n: test videos (fakes of that column + the reals counted); FF++ = "
                 "FF++ fakes against FF++ reals; each method and DFDC against every test real")
    lines.append(f"seconds per stage: {r['seconds_per_stage']} (total {r['seconds']} s)")
    lines.append(f"report: {r.get('report_path', '')}")
    return "\n".join(lines)

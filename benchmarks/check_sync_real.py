"""The sync detector on real speech: the DFDC clips with audio in ``../shared/data``, re-muxed
with the sound shifted by chosen numbers of frames (FFmpeg: ``-ss`` on the audio input for sound
early, ``-itsoffset`` for sound late; the video stream is copied, so the frames are the same).

Faces are detected once on each clip (YuNet, every 5th frame) and the windows of every shifted
copy are cut around the same frames. For the training-free baseline and, with ``--run``, a sync
model (e.g. the one ``make demo`` trains on the talking demo set), it prints each clip's
estimated offset against the true one, the offset error, and the AUC of shifted against
aligned windows with its 95% video-bootstrap interval and n. With four clips this measures the
pipeline more than any model. Not a speed benchmark (``make bench`` runs only ``bench_*.py``).

    python benchmarks/check_sync_real.py [--run data/runs/sync-demo-...] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dflab.data.video import ffmpeg_exe
from dflab.data.faces import create_detector, primary_face
from dflab.core.metrics import bootstrap_auc_ci
from dflab.data.sync_windows import video_windows
from dflab.av.sync import (baseline_curves, clip_summary, load_sync, model_curves, _masked_curve,
                        _window_scores)

SHIFTS = (-10, -5, -3, 0, 3, 5, 10)  # frames; + = the sound comes early
MAX_OFFSET = 15


def remux(src: Path, out: Path, shift_s: float) -> Path:
    if shift_s >= 0:
        inputs = ["-i", str(src), "-ss", f"{shift_s:.4f}", "-i", str(src)]
    else:
        inputs = ["-i", str(src), "-itsoffset", f"{-shift_s:.4f}", "-i", str(src)]
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *inputs, "-map", "0:v",
                    "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(out)], check=True)
    return out


def centres(path: Path, every: int = 5) -> tuple[list, float]:
    import cv2

    det = create_detector("yunet")
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out, idx = [], 0
    while True:
        ok = cap.grab()
        if not ok:
            break
        if idx % every == 0:
            _, frame = cap.retrieve()
            face = primary_face(det.detect(frame), frame.shape)
            if face is not None:
                out.append((idx, face.to_dict()))
        idx += 1
    cap.release()
    return out, fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--run", default="", help="a sync run to score with as well")
    args = ap.parse_args()
    data = Path(args.data)
    manifest = [line.split(",") for line in (data / "manifest.csv").read_text().splitlines()[1:]]
    clips = [data / r[0] for r in manifest if r[3] == "dfdc" and r[0].endswith(".mp4")]
    model = load_sync(args.run).net if args.run else None
    rows, windows = [], []
    with tempfile.TemporaryDirectory() as td:
        for clip in clips:
            cs, fps = centres(clip)
            for k in SHIFTS:
                path = remux(clip, Path(td) / f"{clip.stem}_{k}.mp4", k / fps)
                w = video_windows(path, cs)
                if w is None:
                    print(f"{clip.name} {k:+d}: no windows (no audio or no face)")
                    continue
                row = {"clip": clip.name, "true": k, "fps": round(fps, 2),
                       "windows": len(w["mouths"])}
                per, valid, pooled = baseline_curves(w, MAX_OFFSET)
                row["baseline"] = clip_summary(pooled, MAX_OFFSET, fps, False)["offset_frames"]
                scores = {"baseline": _window_scores(per, valid, MAX_OFFSET, False)}
                if model is not None:
                    dist, valid = model_curves(model, w, MAX_OFFSET)
                    row["learned"] = clip_summary(_masked_curve(dist, valid), MAX_OFFSET,
                                                  fps)["offset_frames"]
                    scores["learned"] = _window_scores(dist, valid, MAX_OFFSET)
                rows.append(row)
                for name, s in scores.items():
                    windows += [(name, f"{clip.stem}_{k}", int(k != 0), v) for v in s]
    models = ["baseline"] + (["learned"] if model is not None else [])
    print(f"{'clip':<16} {'fps':>5} {'windows':>7} {'true':>5} " + " ".join(f"{m:>9}" for m in models))
    for r in rows:
        print(f"{r['clip']:<16} {r['fps']:>5} {r['windows']:>7} {r['true']:>+5d} "
              + " ".join(f"{r[m]:>+9.0f}" for m in models))
    from sklearn.metrics import roc_auc_score

    summary = {}
    # a clip's own audio-visual offset is not known to be 0 (recording, muxing, lips that lead
    # the sound): the relative error compares each copy's estimate with the unshifted copy's
    base = {(r["clip"], m): r[m] for r in rows if r["true"] == 0 for m in models}
    for m in models:
        err = np.array([abs(r[m] - r["true"]) for r in rows])
        rel = np.array([abs(r[m] - base[(r["clip"], m)] - r["true"]) for r in rows
                        if r["true"] != 0 and (r["clip"], m) in base])
        w = [(g, y, v) for name, g, y, v in windows if name == m and np.isfinite(v)]
        g, y, v = (np.array(c) for c in zip(*w))
        auc = roc_auc_score(y, v)
        lo, hi = bootstrap_auc_ci(y, v, g, 1000, seed=0)
        summary[m] = {"median_abs_error_frames": float(np.median(err)),
                      "within_1_frame": f"{int((err <= 1).sum())}/{len(err)}",
                      "relative_median_abs_error_frames": float(np.median(rel)),
                      "relative_within_1_frame": f"{int((rel <= 1).sum())}/{len(rel)}",
                      "window_auc": round(float(auc), 3), "ci": [round(lo, 3), round(hi, 3)],
                      "n_windows": [int((y == 0).sum()), int((y == 1).sum())],
                      "n_videos": [int(len(set(g[y == 0]))), int(len(set(g[y == 1])))]}
        print(f"{m}: offset error median {np.median(err):.1f} frames, within one frame "
              f"{summary[m]['within_1_frame']}; relative to the unshifted copy's estimate: "
              f"median {np.median(rel):.1f}, within one frame "
              f"{summary[m]['relative_within_1_frame']}; shifted vs aligned windows AUC {auc:.3f} "
              f"[{lo:.3f}, {hi:.3f}] (n {summary[m]['n_windows'][0]} aligned + "
              f"{summary[m]['n_windows'][1]} shifted windows, {summary[m]['n_videos'][0]} + "
              f"{summary[m]['n_videos'][1]} videos)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

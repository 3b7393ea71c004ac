"""Dataset statistics from a preprocessed folder, and plotly figures of them for the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dflab.core.files import reading, write_json
from dflab.data.preprocess import META_REDO, read_meta
from dflab.data.sources import video_uid

__all__ = ["dataset_stats", "plot_stats"]


def _counts(values) -> dict[str, int]:
    s = values.fillna("").astype(str).replace("", "unknown")
    return {k: int(v) for k, v in s.value_counts().sort_index().items()}


def dataset_stats(out: str | Path, save: bool = True) -> dict[str, Any]:
    """Videos, frames, labels, methods, compressions, resolutions, fps, durations, face coverage,
    faces per frame, confidence distribution and any demographic columns; saved as stats.json."""
    # Long on purpose: one pass over the index and the per-video records, each statistic a few
    # lines.
    import pandas as pd

    out = Path(out)
    index_path = out / "index.csv"
    if not index_path.exists():
        raise FileNotFoundError(f"no index at '{index_path}'; run `dflab preprocess` first")
    from dflab.data.datasets import load_index

    df = load_index(out, faces_only=False)
    videos = []
    for meta_path in sorted((out / "videos").rglob("meta.json")):
        if meta_path.parent.name.endswith(".part"):
            continue
        m = read_meta(meta_path)
        with reading(meta_path, "per-frame record", META_REDO):
            v, r = m.get("video") or {}, m["record"]
            # a labels CSV's own columns first: what was measured here (fps, width, ...) wins
            videos.append({**r.get("extra", {}),
                           "uid": video_uid(r["dataset"], r["method"], r["compression"],
                                            r["video_id"]),
                           "label": r["label"], "method": r["method"],
                           "dataset": r["dataset"], "compression": r["compression"],
                           "resolution": f"{v['width']}x{v['height']}",
                           "orientation": "portrait" if v["height"] > v["width"] else "landscape",
                           "fps": round(float(v["fps"]), 2), "duration_s": float(v["duration_s"]),
                           "coverage": float(m["summary"]["coverage"]),
                           "has_audio": bool(m["audio"]["has_audio"])})
    vdf = pd.DataFrame(videos)
    if vdf.empty:
        raise ValueError(f"'{out}' has no finished videos to describe")
    with reading(index_path, "index", "rebuild it: run `dflab preprocess` on the folder again"):
        conf = df["confidence"].dropna().to_numpy(dtype=float)
        n_faces = df["n_faces"].to_numpy(dtype=float)
    hist, edges = np.histogram(conf, bins=20, range=(0, 1)) if len(conf) else ([], [])
    demo_cols = [c for c in ("gender", "race", "age", "ethnicity", "skin_tone") if c in vdf]
    stats = {
        "videos": int(len(vdf)),
        "frames": int(len(df)),
        "frames_with_face": int(df["has_face"].sum()),
        "face_coverage": round(float(df["has_face"].mean()), 4) if len(df) else 0.0,
        "faces_per_frame": round(float(n_faces.mean()), 3) if len(df) else 0.0,
        # of the frames with a face, those whose 68 landmarks passed the check, per model
        "landmark_coverage": _landmark_coverage(df),
        "label_videos": _counts(vdf["label"]),
        "label_frames": _counts(df["label"]),
        "method_videos": _counts(vdf["method"]),
        "method_frames": _counts(df["method"]),
        "dataset_videos": _counts(vdf["dataset"]),
        "compression_videos": _counts(vdf["compression"]),
        "split_frames": _counts(df["split"]),
        "resolution_videos": _counts(vdf["resolution"]),
        "orientation_videos": _counts(vdf["orientation"]),
        "fps": {"min": float(vdf["fps"].min()), "max": float(vdf["fps"].max()),
                "mean": round(float(vdf["fps"].mean()), 2)},
        "duration_s": {"min": float(vdf["duration_s"].min()), "max": float(vdf["duration_s"].max()),
                       "total": round(float(vdf["duration_s"].sum()), 1)},
        "videos_with_audio": int(vdf["has_audio"].sum()),
        "coverage_per_video": {u: float(c) for u, c in zip(vdf["uid"], vdf["coverage"])},
        "no_face_reasons": _counts(df.loc[~df["has_face"], "reason"]) if (~df["has_face"]).any()
        else {},
        "confidence_hist": {"counts": [int(c) for c in hist],
                            "edges": [round(float(e), 3) for e in edges]},
        "demographics": {c: _counts(vdf[c]) for c in demo_cols},
    }
    if save:
        write_json(out / "stats.json", stats)
    return stats


def _landmark_coverage(df) -> dict[str, Any]:
    """{"frames_with_face", "with_landmarks", "coverage", "models": {model: frames}}."""
    import pandas as pd

    faces = df[df["has_face"].astype(str).str.lower() == "true"]
    models = faces["landmarks"].fillna("").astype(str) if "landmarks" in faces else \
        pd.Series([""] * len(faces), dtype=str)
    got = models[models != ""]
    return {"frames_with_face": int(len(faces)), "with_landmarks": int(len(got)),
            "coverage": round(len(got) / len(faces), 4) if len(faces) else 0.0,
            "models": _counts(got)}


def plot_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """plotly figures: real/fake, per method, resolutions, face coverage per video, confidence."""
    import plotly.graph_objects as go

    def bar(d: dict, title: str, x: str = "", y: str = "count") -> go.Figure:
        fig = go.Figure(go.Bar(x=list(d), y=list(d.values())))
        fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=300,
                          margin=dict(l=40, r=10, t=40, b=40))
        return fig

    figs = {
        "labels": bar(stats["label_frames"], "Frames: real vs fake"),
        "methods": bar(stats["method_videos"], "Videos per method"),
        "resolutions": bar(stats["resolution_videos"], "Videos per resolution"),
        "coverage": bar(stats["coverage_per_video"], "Face coverage per video", y="coverage"),
    }
    h = stats["confidence_hist"]
    if h["counts"]:
        centres = [(a + b) / 2 for a, b in zip(h["edges"][:-1], h["edges"][1:])]
        figs["confidence"] = bar(dict(zip([f"{c:.2f}" for c in centres], h["counts"])),
                                 "Primary-face confidence", x="score")
    return figs

"""The Audio-visual tab: sync windows, the sync model and its scores (``dflab.av.sync``) on
the selected dataset.

For a chosen clip: the mouth crops over time (the centre frame of each window, with the lip
contour drawn where the windows have lip landmarks), the lip-opening curve over the speech
loudness, the MFCC image, and both detectors' curves over audio offsets (the learned model's
distance, the training-free detector's correlation), with the estimated offsets marked. A table
lists the scored clips, most out of sync first."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as W

from dflab.av.sync import load_sync, score_clip
from dflab.data.sync_windows import load_windows

from ..jobs import JobPanel
from ..session import Session
from ..widgets import error_html, hide_while_empty, set_options, show_figure
from .base import Tab


def clips_html(rows: list[dict[str, Any]]) -> str:
    """Scored clips (``sync_clips_<split>.csv`` rows) as an HTML table, most out of sync first."""
    if not rows:
        return "<p>No scored clips yet: train the sync model, then score the test split.</p>"
    rows = sorted(rows, key=lambda r: -float(r["learned_sync_score"]))
    head = "".join(f"<th style='text-align:left;padding-right:1em'>{h}</th>" for h in (
        "clip", "method", "label", "sync score (learned)", "offset (frames)", "confidence",
        "training-free offset"))
    body = "".join(
        "<tr>" + "".join(f"<td style='padding-right:1em'>{v}</td>" for v in (
            html.escape(str(r["uid"])), html.escape(str(r["method"])), r["label"],
            f"{float(r['learned_sync_score']):+.3f}", f"{float(r['learned_offset_frames']):+.0f}",
            f"{float(r['learned_confidence']):.3f}",
            f"{float(r['baseline_offset_frames']):+.0f}")) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def mouth_strip(mouths: Any, lips: Any = None, n: int = 24, zoom: int = 3) -> bytes:
    """PNG of the centre frame of up to ``n`` windows side by side (``mouths uint8 (N, F, H,
    W)`` grey), with the outer (green) and inner (orange) lip contour drawn where ``lips``
    (``float32 (N, F, 20, 2)`` in crop pixels, NaN without landmarks) has them."""
    import cv2
    import numpy as np

    step = max(1, len(mouths) // n)
    centre = mouths.shape[1] // 2
    tiles = []
    for i in range(0, len(mouths), step)[:n]:
        tile = cv2.cvtColor(cv2.resize(mouths[i, centre], None, fx=zoom, fy=zoom,
                                       interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
        pts = None if lips is None else lips[i, centre]
        if pts is not None and np.isfinite(pts).all():
            for contour, colour in ((pts[:12], (0, 200, 0)), (pts[12:], (0, 140, 255))):
                cv2.polylines(tile, [np.round(contour * zoom).astype(np.int32)], True, colour, 1,
                              cv2.LINE_AA)
        tiles.append(tile)
    ok, buf = cv2.imencode(".png", np.hstack(tiles))
    return buf.tobytes() if ok else b""


def opening_figure(win: dict) -> Any:
    """The lip opening of every frame over the speech loudness (dB, 10 ms), the speech span
    the detectors read shaded; None when the windows have no lip landmarks."""
    import numpy as np
    import plotly.graph_objects as go

    from dflab.av.sync import loudness_db, speech_span
    from dflab.data.sync_windows import dense_track

    tr = dense_track(win)
    ok = np.isfinite(tr["opening"])
    if not ok.any():
        return None
    loud = loudness_db(win)
    t = (np.arange(len(loud)) * float(win["hop_s"])).round(3).tolist()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=loud.round(2).tolist(), name="speech loudness (dB)",
                             yaxis="y2", line={"color": "#bbbbbb", "width": 1}))
    fig.add_trace(go.Scatter(x=tr["times"][ok].round(3).tolist(),
                             y=tr["opening"][ok].round(4).tolist(), mode="lines+markers",
                             name="lip opening (inner height / width)",
                             marker={"size": 3}, line={"color": "#d62728"}))
    start, end = speech_span(win)
    fig.add_vrect(x0=start, x1=end, fillcolor="#1f77b4", opacity=0.06, line_width=0,
                  annotation_text="speech", annotation_position="top left")
    fig.update_layout(title="lip opening over the speech loudness", xaxis_title="time (s)",
                      yaxis_title="lip opening", height=280, margin={"t": 40, "b": 40},
                      yaxis2={"overlaying": "y", "side": "right", "title": "dB"},
                      legend={"orientation": "h", "y": -0.35})
    return fig


def sync_figures(win: dict, scored: dict) -> tuple[Any, Any]:
    """(the MFCC image over time, the curves over offsets with the estimates marked); plain
    lists only, so the figures are JSON-clean on every kernel."""
    import numpy as np
    import plotly.graph_objects as go

    mfcc = win["mfcc"]
    # as the model reads it: each coefficient standardised over the clip (c0, the log energy,
    # would otherwise take the whole colour scale)
    z = (mfcc - mfcc.mean(1, keepdims=True)) / (mfcc.std(1, keepdims=True) + 1e-5)
    t = (np.arange(mfcc.shape[1]) * float(win["hop_s"])).round(3).tolist()
    img = go.Figure(go.Heatmap(z=z.round(2).tolist(), x=t, colorscale="Viridis",
                               colorbar={"title": "z"}))
    img.update_layout(title="MFCC, standardised per coefficient (10 ms hop)", xaxis_title="time (s)",
                      yaxis_title="coefficient", height=260, margin={"t": 40, "b": 40})
    off = scored["offsets"]
    curves = go.Figure()
    for name, key, axis, where in (
            ("learned: distance (lower = in sync)", "learned", "y", "top right"),
            ("training-free: correlation (higher = in sync)", "baseline", "y2",
             "bottom left")):
        if key not in scored:
            continue
        curve = [None if not np.isfinite(v) else round(float(v), 4) for v in scored[key]["curve"]]
        curves.add_trace(go.Scatter(x=off, y=curve, name=name, yaxis=axis, mode="lines"))
        est = scored[key]["offset_frames"]
        if np.isfinite(est):
            label = "training-free" if key == "baseline" else key
            curves.add_vline(x=est, line_dash="dash", annotation_text=f"{label} {est:+.0f}",
                             annotation_position=where)
    curves.update_layout(title="audio offset (frames; + = sound early)", height=300,
                         xaxis_title="offset (frames)", yaxis_title="distance",
                         yaxis2={"overlaying": "y", "side": "right", "title": "correlation"},
                         margin={"t": 40, "b": 40}, legend={"orientation": "h", "y": -0.3})
    return img, curves



class AudioVisualTab(Tab):
    """Lip-sync on the selected dataset: its clips with sync windows, the sync model and its
    scores; the talking demo set one click away."""

    title = "Audio-visual"

    def __init__(self, session: Session):
        super().__init__(session)
        self.demo_panel = JobPanel("Build the talking demo set", method="talking_set")
        self.demo_panel.start.on_click(lambda _: self.demo_panel.run_detached(session.lab))
        self.demo_panel.on_done.append(lambda res: session.select(dataset=res.out.name))
        self.extract_panel = JobPanel("Extract sync windows", method="sync_extract")
        self.extract_panel.start.on_click(lambda _: self.extract_panel.run_detached(
            session.lab, name=self.processed.name, processed=str(self.processed)))
        self.train_panel = JobPanel("Train the sync model", method="sync_train")
        self.train_panel.start.on_click(lambda _: self.train_panel.run_detached(
            session.lab, processed=str(self.processed)))
        self.score_panel = JobPanel("Score the test clips")
        self.score_panel.start.on_click(lambda _: self.score_panel.run(self._score))
        self.job_panels = [self.demo_panel, self.extract_panel, self.train_panel,
                           self.score_panel]
        self.score_panel.on_done.append(lambda _: self.refresh())
        self.folder_note = W.HTML("")
        self.clip = W.Dropdown(description="clip", options=[], layout=W.Layout(width="60%"))
        self.clip.observe(lambda ch: ch["new"] and session.select(clip=ch["new"]), "value")
        self.summary, self.table = W.HTML(""), W.HTML("")
        self.strip = hide_while_empty(W.Image(format="png", layout=W.Layout(max_width="100%")))
        self.plots = W.Output()
        self.widget = W.VBox([
            W.HTML("<p>Lip-sync: mouth crops around each sampled frame (aligned on the lip "
                   "landmarks where there are 68 points) and the audio at a 10 ms hop. The "
                   "training-free detector correlates the lip opening with the speech; the sync "
                   "model trains on real clips only. A clip whose sound is shifted or foreign "
                   "scores high.</p>"),
            self.folder_note, self.demo_panel.widget,
            self.extract_panel.widget, self.train_panel.widget, self.score_panel.widget,
            self.clip, self.summary, W.HTML("<b>mouth over time</b>"), self.strip, self.plots,
            W.HTML("<h4>Scored clips</h4>"), self.table])
        self.refresh()

    @property
    def processed(self) -> Path:
        """The selected dataset's folder (the context bar's)."""
        return self.session.processed

    def on_change(self, what: set[str]) -> None:
        if what & {"dataset", "data_root", "runs"}:
            self.refresh()
        if "clip" in what and self.session.clip in self.clip.options:
            self.clip.value = self.session.clip
            self.show_clip(self.session.clip)

    def _run(self) -> Path | None:
        return self.session.newest("sync")

    def _score(self, callbacks, cancel):
        run = self._run()
        if run is None:
            raise ValueError("no sync run yet: train the sync model first")
        shifts = self.session.paths["data_root"] / "demo_av" / "shifts.json"
        return self.session.lab.sync_score(run, self.processed, "test",
                                           shifts if shifts.is_file() else "", callbacks, cancel)

    def refresh(self) -> None:
        import pandas as pd

        videos = self.processed / "videos"
        uids = sorted(p.parent.relative_to(videos).as_posix()
                      for p in videos.rglob("sync.npz")) if videos.is_dir() else []
        set_options(self.clip, uids)
        run = self._run()
        table = run / "sync_clips_test.csv" if run else None
        self.table.value = clips_html(pd.read_csv(table).to_dict("records")
                                      if table and table.is_file() else [])
        self.folder_note.value = (f"<p>dataset <b>{html.escape(self.processed.name)}</b> "
                                  f"(the context bar's): {len(uids)} clips with sync "
                                  f"windows</p>")
        if not uids:
            self.summary.value = ("No sync windows in this folder: build the talking demo set, "
                                  "or extract windows from a preprocessed folder with audio.")

    def show_clip(self, uid: str) -> None:
        import numpy as np

        win = load_windows(self.processed, uid)
        if win is None:
            self.summary.value = error_html(f"{uid} has no sync windows")
            return
        run = self._run()
        scored = load_sync(run).score(win) if run else score_clip(win)  # the baseline alone
        self.strip.value = mouth_strip(win["mouths"], win.get("lips"))
        sources = dict(zip(*np.unique(win["mouth_source"], return_counts=True)))
        lines = [f"<b>{html.escape(uid)}</b>: {scored['windows']} windows at "
                 f"{scored['fps']:.1f} fps; mouth from " + ", ".join(
                     f"{k} ({v})" for k, v in sources.items())]
        for key in ("learned", "baseline"):
            if key in scored:
                s = scored[key]
                name = (f"training-free ({s['kind'].replace('_', ' ')})" if key == "baseline"
                        else key)
                lines.append(f"{name}: offset {s['offset_frames']:+.0f} frames "
                             f"({s['offset_ms']:+.0f} ms), confidence {s['confidence']:.3f}, "
                             f"sync score {s['sync_score']:+.3f}")
        if "learned" not in scored:
            lines.append("no sync model yet: the training-free detector only")
        self.summary.value = "<br>".join(lines)
        img, curves = sync_figures(win, scored)
        opening = opening_figure(win)
        show_figure(self.plots, curves)
        if opening is not None:
            show_figure(self.plots, opening, replace=False)
        show_figure(self.plots, img, replace=False)

"""The Inspect tab: the selected run's test frames, most wrong first, each with its full frame,
crop, landmarks, Grad-CAM and the scores of every model."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import ipywidgets as W

from dflab.core.files import read_json

from ..session import Session
from ..widgets import error_html, hide_while_empty, icon, set_options, table_html
from .base import Tab


SORTS = ["most wrong first", "sync score, most out of sync first"]
SHOW = ["misclassified", "all frames"]


class InspectTab(Tab):
    """Misclassified (or all) test frames filtered by method, compression, dataset and confidence,
    most wrong first; a click shows the full frame with its box, the crop, the metadata and the
    scores of both models (visual run and, when one exists, the forensic MLP)."""

    title = "Inspect"

    def __init__(self, session: Session):
        super().__init__(session)
        self.filters = {k: W.Dropdown(description=k, options=["all"],
                                      style={"description_width": "initial"},
                                      layout=W.Layout(width="250px"))
                        for k in ("method", "compression", "dataset")}
        # how far past the run's threshold a wrong frame's p(fake) is: 0 shows every frame
        # misclassified at that threshold (it is tuned on validation, so rarely 0.5)
        self.min_margin = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05,
                                        description="min |p − threshold|",
                                        style={"description_width": "130px"},
                                        layout=W.Layout(width="420px"))
        self.refresh_button = W.Button(description="Load predictions", icon=icon("refresh"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.sort = W.Dropdown(description="sort by", options=SORTS, value=SORTS[0],
                               layout=W.Layout(width="330px"))
        # every frame, right ones too: a well-trained model may misclassify none of a method
        self.which = W.ToggleButtons(options=SHOW, value=SHOW[0], style={"button_width": "100px"})
        for w in [*self.filters.values(), self.min_margin, self.sort, self.which]:
            w.observe(lambda _: self.show(), "value")
        self.gallery = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.summary = W.HTML("")
        self.frame_image = hide_while_empty(W.Image(format="jpg",
                                                    layout=W.Layout(max_width="480px")))
        self.crop_image = hide_while_empty(W.Image(format="jpg",
                                                   layout=W.Layout(max_width="200px")))
        self.cam_image = hide_while_empty(W.Image(format="jpg",
                                                  layout=W.Layout(max_width="200px")))
        self.cam_method = W.ToggleButtons(options=["gradcam", "gradcam++"], value="gradcam",
                                          style={"button_width": "90px"})
        self.cam_method.observe(lambda _: self._crop is not None and self.gradcam(self._crop),
                                "value")  # the shown crop again, with the other method
        self.cam_note = W.HTML("")
        self._crop: Path | None = None
        self.detail = W.HTML("")
        self.preds = None
        self.threshold = 0.5
        self.counts: dict[str, int] = {}  # misclassified frames shown, per method
        self.forensic: Any = None
        self.widget = W.VBox([W.HBox([self.refresh_button, *self.filters.values()]),
                              W.HBox([self.which, self.min_margin, self.sort]), self.summary,
                              self.gallery,
                              W.HBox([self.frame_image,
                                      W.VBox([W.HTML("<b>crop</b>"), self.crop_image]),
                                      W.VBox([self.cam_note, self.cam_image, self.cam_method]),
                                      self.detail])])

    def on_change(self, what: set[str]) -> None:
        if what & {"run", "dataset", "data_root"} and self.preds is not None:
            self.refresh()  # the predictions shown belong to the old selection

    def refresh(self) -> None:
        import numpy as np
        import pandas as pd

        run = self.session.run
        path = run / "predictions_test.csv" if run else None
        if path is None or not path.exists():
            self.summary.value = "No test predictions yet: train a run and evaluate it on test."
            self.preds, self.gallery.children = None, ()
            return
        self.preds = pd.read_csv(path, dtype={"video_id": str}, keep_default_na=False)
        report = run / "eval_test.json"
        self.threshold = (float(json.loads(report.read_text())["visual"]["threshold"])
                          if report.exists() else 0.5)
        self.preds["margin"] = (self.preds["prob"] - self.threshold).abs()
        # how far on the wrong side of the threshold: > 0 misclassified, < 0 right
        sign = np.where(self.preds["target"] == 1, -1.0, 1.0)
        self.preds["wrong_by"] = sign * (self.preds["prob"] - self.threshold)
        self.forensic = None
        forensic = self.session.newest("forensic")
        fpath = forensic / "predictions_test_mlp.csv" if forensic else None
        if fpath is not None and fpath.exists():
            f = pd.read_csv(fpath, dtype={"video_id": str}, keep_default_na=False)
            self.forensic = dict(zip(f["crop_path"], f["prob"]))
        self.preds = self._with_sync(self.preds)
        for key, w in self.filters.items():
            set_options(w, ["all"] + sorted(self.preds[key].astype(str).unique()))
        self.show()

    def _with_sync(self, preds):
        """``preds`` with ``sync_clip`` (the clip's sync score) from the newest fuse run made
        with a sync run over the same processed folder, when there is one."""
        processed = str(self.session.processed)
        for run in self.session.lab.runs("fuse"):
            meta = run / "fuser.json"
            csv = run / "predictions_test.csv"
            if not (meta.is_file() and csv.is_file()):
                continue
            info = read_json(meta)
            if info.get("sync_run") and str(info.get("processed")) == processed:
                import pandas as pd

                sync = pd.read_csv(csv, usecols=["uid", "frame_index", "sync_clip", "has_sync"])
                sync = sync[sync["has_sync"].astype(str) == "True"].drop(columns="has_sync")
                return preds.drop(columns=["sync_clip"], errors="ignore").merge(
                    sync, on=["uid", "frame_index"], how="left")
        return preds

    def show(self) -> None:
        if self.preds is None:
            return
        df = self.preds
        every = self.which.value == SHOW[1]
        wrong = df if every else df[(df["pred"] != df["target"])
                                    & (df["margin"] >= self.min_margin.value)]
        for key, w in self.filters.items():
            if w.value != "all":
                wrong = wrong[wrong[key].astype(str) == w.value]
        n = len(wrong)
        self.counts = {str(m): int(c) for m, c in wrong.groupby("method").size().items()}
        by_sync = self.sort.value == SORTS[1]
        if by_sync and "sync_clip" not in wrong:
            self.summary.value = ("No sync scores for this folder: fuse with a sync run "
                                  "(Audio-visual tab, or `dflab fuse --sync RUN`).")
            self.gallery.children = ()
            return
        wrong = wrong.sort_values("sync_clip" if by_sync else "wrong_by", ascending=False,
                                  na_position="last").head(24)
        processed = self.session.processed
        items = []
        for r in wrong.itertuples():
            p = processed / r.crop_path
            if not p.exists():
                continue
            img = W.Image(value=p.read_bytes(), format="jpg", width=96, height=96)
            b = W.Button(description=f"{r.method[:10]} p={r.prob:.2f}",
                         layout=W.Layout(width="110px"))
            b.on_click(lambda _, row=r: self.select(row))
            items.append(W.VBox([img, b]))
        self.gallery.children = items
        per = " · ".join(f"{html.escape(m)} {c}" for m, c in sorted(self.counts.items()))
        what = "test frames, right and wrong," if every else "misclassified test frames"
        self.summary.value = (f"<b>{n} {what}</b> match at the run's threshold "
                              f"{self.threshold:.3f} (tuned on validation){': ' + per if per else ''}"
                              f". The {len(items)} most wrong are shown.")

    def select(self, row: Any) -> None:
        import cv2
        import numpy as np

        from dflab.data.preprocess import frame_record

        self.session.select(clip=row.uid)  # the clip every tab shows (Audio-visual too)
        processed = self.session.processed
        crop = processed / row.crop_path
        self._crop = crop
        self.crop_image.value = crop.read_bytes() if crop.exists() else b""
        self.gradcam(crop)
        frame = cv2.imread(str(processed / row.frame_path)) if row.frame_path else None
        record = frame_record(processed, row.crop_path)
        primary = (record or {}).get("primary") or {}
        points = primary.get("landmarks68")
        if frame is not None:
            box = np.array([float(v) if v != "" else np.nan
                            for v in (row.x1, row.y1, row.x2, row.y2)])
            thick = max(2, frame.shape[1] // 300)
            if np.isfinite(box).all():
                x1, y1, x2, y2 = box.astype(int)
                cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 0, 255), thick)
            for x, y in points or []:  # the 68 landmarks, green
                cv2.circle(frame, (round(x), round(y)), thick, (0, 220, 0), -1)
            ok, buf = cv2.imencode(".jpg", frame)
            self.frame_image.value = buf.tobytes() if ok else b""
        else:
            self.frame_image.value = b""
        forensic = self.forensic.get(row.crop_path) if self.forensic else None
        self.detail.value = "<h4>Frame</h4>" + table_html({
            "video": row.uid,
            "frame": row.frame_index, "label": row.label, "split": row.split,
            "visual model p(fake)": round(float(row.prob), 4),
            "forensic MLP p(fake)": "no forensic run" if forensic is None
            else round(float(forensic), 4),
            "landmarks": f"68 points ({primary.get('landmarks68_model')}), drawn on the frame"
            if points else primary.get("landmarks68_reason", "none stored"),
            "crop": row.crop_path, "frame image": row.frame_path or "not saved"})

    def gradcam(self, crop: Path) -> None:
        """The selected crop's heatmap of the fake logit (the Train tab's run, best.pt)."""
        from dflab.analysis.explain import crop_overlay

        run = self.session.run
        ckpt = run / "checkpoints" / "best.pt" if run else None
        if ckpt is None or not ckpt.is_file() or not crop.is_file():
            self.cam_image.value, self.cam_note.value = b"", ""
            return
        try:
            p, jpeg = crop_overlay(ckpt, crop, self.cam_method.value)
        except Exception as exc:  # e.g. a backbone Grad-CAM cannot read
            self.cam_image.value = b""
            self.cam_note.value = error_html(f"Grad-CAM: {exc}")
            return
        self.cam_image.value = jpeg
        self.cam_note.value = (f"<b>{'Grad-CAM++' if self.cam_method.value == 'gradcam++' else 'Grad-CAM'}"
                               f"</b> of the fake logit (p = {p:.3f})")

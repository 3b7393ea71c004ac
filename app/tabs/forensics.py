"""The Forensics tab: FFT/DCT/noise features of the selected dataset's crops, a per-image
explorer, the MLP on them with permutation importance and SHAP, the fused verdict, and the
feature-set refinement."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..jobs import JobPanel
from ..session import Session
from ..widgets import error_html, icon, report_table, set_options, show_figure
from .base import Step, Tab


class ForensicsTab(Tab):
    title = "Forensics"
    steps = (Step("forensic features", lambda s: (s.processed / "features.csv").exists()),)

    def __init__(self, session: Session):
        super().__init__(session)
        self.feat_job = JobPanel("Extract features", method="features")
        self.feat_job.start.on_click(lambda _: self.extract())
        self.feat_job.on_done.append(lambda _: self.refresh())
        self.mlp_job = JobPanel("Train MLP", method="train_forensic")
        self.mlp_job.start.on_click(lambda _: self.train())
        self.mlp_job.on_done.append(lambda res: self.explain(res.run))
        self.fuse_job = JobPanel("Fuse visual + forensic (+ audio)", method="fuse")
        self.fuse_job.start.on_click(lambda _: self.fuse())
        self.fuse_job.on_done.append(lambda res: self.show_fused(res.run))
        self.fused = W.HTML("")
        self.refine_job = JobPanel("Refine feature set")
        self.refine_job.start.on_click(lambda _: self.refine())
        self.refine_job.on_done.append(lambda res: self.show_refine(res.path.parent))
        self.refine_steps = W.IntSlider(value=8, min=1, max=52, description="steps")
        self.front = W.Dropdown(description="point", options=[], layout=W.Layout(width="60%"))
        self.subset_name = W.Text(value="refined", description="name")
        self.save_point = W.Button(description="Save this point as a subset", icon=icon("save"))
        self.save_point.on_click(lambda _: self.save_subset())
        self.refine_note, self.refine_plot = W.HTML(""), W.Output()
        self.frame = W.Dropdown(description="frame", options=[], layout=W.Layout(width="70%"))
        self.frame.observe(lambda c: c["new"] and self.explore(c["new"]), "value")
        self.feature = W.Dropdown(description="feature", options=[])
        self.feature.observe(lambda c: c["new"] and self.histogram(c["new"]), "value")
        # the six explorer plots and the three dataset views in grids that wrap on narrow pages
        self.explorer_cells = [W.Output(layout=W.Layout(min_width="0")) for _ in range(6)]
        self.explorer = W.GridBox(self.explorer_cells, layout=W.Layout(
            grid_template_columns="repeat(auto-fill, minmax(400px, 1fr))", grid_gap="4px"))
        self.dataset_cells = [W.Output(layout=W.Layout(min_width="0")) for _ in range(3)]
        self.dataset_plots = W.GridBox(self.dataset_cells, layout=W.Layout(
            grid_template_columns="repeat(auto-fill, minmax(400px, 1fr))", grid_gap="4px"))
        self.explain_plots = W.Output()
        self.results = W.HTML("")
        self._real_cache: tuple[Path | None, Any] = (None, None)
        self.widget = W.VBox([
            self.feat_job.widget, W.HTML("<h3>Per-image explorer</h3>"), self.frame,
            self.explorer, W.HTML("<h3>Dataset views</h3>"), self.feature, self.dataset_plots,
            W.HTML("<h3>MLP on the features</h3>"), self.mlp_job.widget, self.results,
            self.explain_plots,
            W.HTML("<h3>Fused verdict</h3><p>A logistic stacker fitted on the validation "
                   "split over the selected training run's probability, the latest forensic "
                   "MLP's and the audio statistics; scored on test beside the two.</p>"),
            self.fuse_job.widget, self.fused,
            W.HTML("<h3>Feature-set refinement</h3><p>Each feature family's cost per crop, "
                   "a forward selection scored by cross-validated video AUC (train and "
                   "validation videos only), and the Pareto front of AUC against ms per crop. "
                   "Pick a point and save it; <code>features.subset=NAME</code> then makes "
                   "extraction compute only what it needs.</p>"),
            self.refine_steps, self.refine_job.widget, self.refine_plot, self.refine_note,
            W.HBox([self.front, self.subset_name, self.save_point])])
        self.refresh()
        self.job_panels = [self.feat_job, self.mlp_job, self.fuse_job, self.refine_job]
        fused = self.session.newest("fuse")
        if fused:
            self.show_fused(fused)
        forensic = self.session.newest("forensic")
        if forensic is not None and (forensic / "refine.json").is_file():
            self.show_refine(forensic)

    def on_change(self, what: set[str]) -> None:
        if what & {"dataset", "data_root", "runs"}:
            self.refresh()

    @property
    def processed(self) -> Path:
        return self.session.processed

    def extract(self) -> None:
        self.feat_job.run_detached(self.session.lab, name=self.processed.name,
                                   processed=str(self.processed))

    def refresh(self) -> None:
        from dflab.data.datasets import load_index
        from dflab.forensic.features import feature_names

        self._real_cache = (None, None)  # the crops may have changed
        try:
            df = load_index(self.processed)
        except FileNotFoundError:
            return
        opts = [(f"{r.method} · {r.video_id} · frame {r.frame_index} · {r.label}", r.crop_path)
                for r in df.groupby("uid").head(1).itertuples()]
        frame, feature = self.frame.value, self.feature.value
        set_options(self.frame, opts)
        if self.frame.value and self.frame.value == frame:
            self.explore(frame)  # the same frame, drawn again from what the folder holds now
        if (self.processed / "features.csv").exists():
            set_options(self.feature, feature_names(), feature or "fft_grid_peak_2")
            if self.feature.value and self.feature.value == feature:
                self.histogram(feature)

    def explore(self, crop_rel: str) -> None:
        import cv2

        from dflab.forensic.model import image_explorer

        img = cv2.imread(str(self.processed / crop_rel))
        if img is None:
            return
        real = None
        if (self.processed / "features.csv").exists():
            real = self._real_profile()
        for cell, fig in zip(self.explorer_cells, image_explorer(img, real).values()):
            fig.update_layout(height=320, margin={"t": 40, "b": 30, "l": 40, "r": 10})
            show_figure(cell, fig)

    def _real_profile(self):
        """Mean azimuthal profile of up to 20 real crops; computed once per processed folder."""
        import cv2
        import numpy as np

        from dflab.data.datasets import load_index
        from dflab.forensic.features import to_gray, azimuthal_profile

        if self._real_cache[0] != self.processed:
            df = load_index(self.processed)
            real = df[df["label"] == "real"]["crop_abspath"].head(20)
            profs = [azimuthal_profile(to_gray(cv2.imread(p))) for p in real]
            self._real_cache = (self.processed, np.mean(profs, axis=0) if profs else None)
        return self._real_cache[1]

    def histogram(self, feature: str) -> None:
        from dflab.forensic.model import plot_correlation, plot_histograms

        figs = [plot_histograms(self.processed, [feature]),
                plot_histograms(self.processed, [feature], True), plot_correlation(self.processed)]
        figs[2].update_layout(width=None, height=520)  # fills its grid cell
        for cell, fig in zip(self.dataset_cells, figs):
            show_figure(cell, fig)

    def train(self) -> None:
        self.mlp_job.run_detached(self.session.lab, processed=str(self.processed))

    def fuse(self) -> None:
        visual = self.session.run
        if visual is None:
            self.fuse_job.status.value = error_html("train a visual model (Train tab) first")
            return
        self.fuse_job.run_detached(self.session.lab, run=str(visual), processed=str(self.processed))

    def show_fused(self, run: Path) -> None:
        ev = run / "eval_test.json"
        if ev.exists():
            self.fused.value = (f"<p>{html.escape(run.name)}</p>"
                                + report_table(json.loads(ev.read_text())))

    def refine(self) -> None:
        run = self.session.newest("forensic")
        if run is None:
            self.refine_job.status.value = error_html("train the forensic MLP first")
            return
        self.refine_job.run(self.session.lab.refine_features, run=run,
                            max_steps=self.refine_steps.value)

    def show_refine(self, run: Path) -> None:
        from dflab.forensic.refine import format_refine, plot_front

        report = json.loads((run / "refine.json").read_text())
        show_figure(self.refine_plot, plot_front(report))
        self.refine_note.value = f"<pre>{html.escape(format_refine(report))}</pre>"
        pts = report["points"]
        self.front.options = [(f"#{i}: {pts[i]['n']} features ({','.join(pts[i]['families'])}), "
                               f"CV AUC {pts[i]['cv_auc']:.3f}, {pts[i]['ms']:.1f} ms", i)
                              for i in report["front"]]
        self.front.value = report["chosen"]

    def save_subset(self) -> None:
        run = self.session.newest("forensic")
        if run is None or self.front.value is None:
            return
        try:
            path = self.session.lab.save_feature_subset(run, self.front.value, self.subset_name.value)
        except (OSError, ValueError) as exc:
            self.refine_note.value = error_html(exc)
            return
        self.show_refine(run)
        self.refine_note.value += (f"<p>saved <b>{html.escape(path.stem)}</b> -> "
                                   f"{html.escape(str(path))}; use it with "
                                   f"<code>features.subset={html.escape(path.stem)}</code></p>")

    def explain(self, run: Path) -> None:
        from dflab.forensic.model import (permutation_importance_table, plot_importance,
                                    plot_shap_summary, shap_values)

        rep = json.loads((run / "eval_test.json").read_text())
        self.explain_plots.outputs = ()
        self.results.value = report_table(rep) + (
            "<p>⏳ computing permutation importance (3 repeats) and SHAP values (40 test crops)"
            "…</p>")
        show_figure(self.explain_plots, plot_importance(
            permutation_importance_table(run, self.processed, repeats=3)), False)
        sv, X, names = shap_values(run, self.processed, n=40, background=30)
        show_figure(self.explain_plots, plot_shap_summary(sv, X, names), False)
        self.results.value = report_table(rep)

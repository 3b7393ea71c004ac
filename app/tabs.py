"""The stage tabs after Environment: Data (sources + preprocessing + statistics), Train, Forensics,
Inspect, Export. Every button is form -> ``JobPanel.run(lab.<stage>)``: the same ``dflab.Lab``
call as the CLI, in a worker thread with cancel; the forms come from the config metadata and
write back into the lab's config. State is re-read from the run folders, so a kernel restart
loses nothing shown."""

from __future__ import annotations

import html
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from dflab.core.environment import in_colab
from dflab.core.events import EpochMetrics, Event, StepLoss

from .jobs import JobPanel
from .widgets import (ConfigForm, auc_text, error_html, hide_while_empty, icon, report_table,
                      set_options, show_figure, table_html, under_root)

if TYPE_CHECKING:  # pragma: no cover
    from .dashboard import Dashboard


def _run_options(dash: "Dashboard", kind: str) -> list[tuple[str, str]]:
    """(label, run name) per run of ``kind``, newest first; the label gives its state."""
    from dflab.core.runs import run_state

    return [(f"{p.name} · {run_state(p)}", p.name) for p in dash.lab.runs(kind)]


def _newest(dash: "Dashboard", kind: str) -> Path | None:
    """The newest run folder of ``kind``, or None."""
    runs = dash.lab.runs(kind)
    return runs[0] if runs else None


class DataTab:
    """Sources (demo, local folder, FF++, DFDC), preprocessing, and dataset statistics."""

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        cfg = dash.cfg
        self.where = ConfigForm(cfg.data, "data", ["source", "root"])
        self.source, self.root = self.where.inputs["source"], self.where.inputs["root"]
        self.root.placeholder = "(default: <data root>/<source>)"
        self.demo_form = ConfigForm(cfg.data, "data", ["demo_videos"])
        self.demo_videos = self.demo_form.inputs["demo_videos"]
        self.demo_job = JobPanel("Build demo set", method="demo_data")
        self.demo_job.start.on_click(lambda _: self.build_demo())
        self.ffpp_server = W.Password(description="FF++ server", placeholder="address from the "
                                     "FF++ access e-mail", layout=W.Layout(width="60%"))
        self.ffpp_tos = W.Checkbox(description="I accept the FaceForensics++ terms of use",
                                   indent=False)
        self.ffpp_form = ConfigForm(cfg.data, "data", ["methods", "compressions",
                                                       "videos_per_split"])
        # in the kernel: a detached job would write the private server address into job.json
        self.ffpp_job = JobPanel("Download FF++")
        self.ffpp_job.start.on_click(lambda _: self.download_ffpp())
        self.kaggle_user = W.Text(description="Kaggle user")
        self.kaggle_key = W.Password(description="Kaggle key")
        self.dfdc_form = ConfigForm(cfg.data, "data", ["dfdc_parts", "max_disk_gb"])
        self.dfdc_parts = self.dfdc_form.inputs["dfdc_parts"]
        self.dfdc_job = JobPanel("Stream DFDC + preprocess", method="fetch_and_preprocess")
        self.dfdc_job.start.on_click(lambda _: self.stream_dfdc())
        self.pre_form = ConfigForm(cfg.preprocess, "preprocess",
                                   ["detector", "detector_weights", "every_nth", "num_frames",
                                    "padding", "min_confidence", "workers", "save_frames",
                                    "audio"],
                                   advanced=["detector_weights", "padding", "min_confidence",
                                             "workers", "save_frames"])
        # a Dask scheduler spreads preprocessing (and feature extraction) over machines
        self.cluster_form = ConfigForm(cfg.env, "env", ["cluster"])
        self.cluster_form.inputs["cluster"].placeholder = "(this machine) tcp://HOST:8786 or local:N"
        self.force = W.Checkbox(description="re-process videos made with other settings",
                                indent=False)
        self.pre_job = JobPanel("Preprocess", method="preprocess")
        self.pre_job.start.on_click(lambda _: self.preprocess())
        self.pre_job.on_done.append(lambda _: self.show_stats())
        self.demo_job.on_done.append(lambda _: self.show_summary())
        self.summary = W.HTML("")
        self.stats_html = W.HTML("")
        self.stats_plots = W.Output()
        acc = W.Accordion(children=[
            W.VBox([self.demo_form.widget, self.demo_job.widget]),
            W.VBox([W.HTML("Videos with a <code>labels.csv</code> (path,label[,method,...]) in "
                           "the folder above; choose source <b>folder</b>.")]),
            W.VBox([self.ffpp_server, self.ffpp_tos, self.ffpp_form.widget, self.ffpp_job.widget]),
            W.VBox([W.HBox([self.kaggle_user, self.kaggle_key]), self.dfdc_form.widget,
                    self.dfdc_job.widget])])
        for i, t in enumerate(["Demo set (offline)", "Local folder", "FaceForensics++",
                               "DFDC (Kaggle)"]):
            acc.set_title(i, t)
        self.sources = acc
        self.widget = W.VBox([
            W.HTML("<h3>1 · Get data</h3>"), acc, self.summary,
            W.HTML("<h3>2 · Preprocess</h3>"), self.where.widget,
            self.pre_form.widget, self.cluster_form.widget, self.force, self.pre_job.widget,
            W.HTML("<h3>3 · Dataset statistics</h3>"), self.stats_html, self.stats_plots])
        self.show_summary()
        self.show_stats()

    @property
    def processed(self) -> Path:
        """The processed folder of the source chosen here (the one Train, Forensics and Inspect
        use)."""
        return self.dash.lab.processed_dir(source=self.source.value)

    # actions: form -> lab stage in a JobPanel --------------------------------------------------
    def _apply(self, panel: JobPanel, *forms: ConfigForm) -> bool:
        """Write the forms into the lab config; a bad value is shown in ``panel``."""
        try:
            for form in forms:
                form.apply(self.dash.cfg)
        except ValueError as exc:  # ConfigError is a ValueError
            panel.status.value = error_html(exc)
            return False
        return True

    def build_demo(self) -> None:
        if self._apply(self.demo_job, self.demo_form):
            self.demo_job.run_detached(self.dash.lab, name="demo")

    def download_ffpp(self) -> None:
        if self._apply(self.ffpp_job, self.ffpp_form):
            self.ffpp_job.run(self.dash.lab.download, dataset="ffpp",
                              servers=[self.ffpp_server.value] if self.ffpp_server.value else [],
                              accept_tos=self.ffpp_tos.value)

    def stream_dfdc(self) -> None:
        import os

        if self.kaggle_user.value and self.kaggle_key.value:
            os.environ["KAGGLE_USERNAME"] = self.kaggle_user.value
            os.environ["KAGGLE_KEY"] = self.kaggle_key.value
        if self._apply(self.dfdc_job, self.dfdc_form, self.pre_form):
            self.dfdc_job.run_detached(self.dash.lab, name="dfdc", dataset="dfdc")

    def preprocess(self) -> None:
        if self._apply(self.pre_job, self.where, self.pre_form, self.cluster_form):
            self.pre_job.run_detached(self.dash.lab, name=self.processed.name,
                                      force=self.force.value)

    # views ---------------------------------------------------------------------------------
    def show_summary(self) -> None:
        labels = self.dash.paths["data_root"] / "demo" / "labels.csv"
        if not labels.exists():
            self.summary.value = "No demo set yet: build it above."
            if self.source.value == "demo":  # a first visit: the section that makes it, open
                self.sources.selected_index = 0
            return
        import pandas as pd

        df = pd.read_csv(labels)
        counts = df.groupby(["split", "method"]).size().unstack(fill_value=0)
        counts.columns.name = None
        self.summary.value = (f"<b>{len(df)} clips</b> in the demo set (clips per split and "
                              f"method)" + counts.reset_index().to_html(index=False))

    def show_stats(self) -> None:
        from dflab.data.stats import dataset_stats, plot_stats

        try:
            stats = dataset_stats(self.processed)
        except (FileNotFoundError, ValueError):
            self.stats_html.value = f"Not preprocessed yet ({html.escape(str(self.processed))})."
            self.stats_plots.outputs = ()
            return
        self.stats_html.value = table_html([
            ("videos", stats["videos"]), ("frames", stats["frames"]),
            ("face coverage", f"{stats['face_coverage']:.1%}"),
            ("faces per frame", stats["faces_per_frame"]),
            ("real / fake frames", stats["label_frames"]),
            ("videos with audio", stats["videos_with_audio"])])
        self.stats_plots.outputs = ()
        for fig in plot_stats(stats).values():
            show_figure(self.stats_plots, fig, replace=False)


class TrainTab:
    """A form from the model and train configs; live loss and ROC while training runs."""

    LIVE_INTERVAL = 1.0  # seconds between plot redraws

    def __init__(self, dash: "Dashboard"):
        from dflab.core.config import list_presets

        self.dash = dash
        self.preset = W.Dropdown(options=["(as loaded)", *list_presets()],
                                 value=dash.preset if dash.preset in list_presets() else
                                 "(as loaded)", description="preset")
        self.preset_note = W.HTML(dash.preset_note)
        self.preset.observe(lambda c: self.apply_preset(c["new"]), "value")
        self.model_form = ConfigForm(dash.cfg.model, "model",
                                     advanced=["weights_path", "head_hidden", "dropout"])
        self.train_form = ConfigForm(dash.cfg.train, "train",
                                     ["epochs", "batch_size", "accumulation", "lr",
                                      "warmup_epochs", "loss", "label_smoothing", "focal_gamma",
                                      "augment", "aug_color", "aug_jpeg_p", "amp", "patience",
                                      "balance", "pseudo_fakes"],
                                     advanced=["accumulation", "warmup_epochs",
                                               "label_smoothing", "focal_gamma", "aug_color",
                                               "aug_jpeg_p", "balance"])
        # what self-blended training sees: real crops, their pseudo-fakes and the blend masks
        self.sbi_button = W.Button(description="Show pseudo-fakes", icon=icon("eye"),
                                   tooltip="four real crops of the chosen folder's training "
                                           "split, a self-blended fake of each, and its mask")
        self.sbi_button.on_click(lambda _: self.show_pseudo_fakes())
        self.sbi_note = W.HTML("")
        self.sbi_samples = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.name = W.Text(value="", placeholder="run name (empty: timestamp)",
                           description="run name")
        self.resume = W.Checkbox(description="resume this run", indent=False)
        self.job = JobPanel("Train", method="train")
        self.job.start.on_click(lambda _: self.start())
        self.job.on_event.append(self.on_event)
        self.job.on_attach.append(self.show_job)
        self.job.on_done.append(lambda res: self.load_run(res.run))
        self.loss_plot = W.Output(layout=W.Layout(flex="3 1 560px", min_width="0"))
        self.roc_plot = W.Output(layout=W.Layout(flex="2 1 380px", min_width="0"))
        self.metrics = W.HTML("")
        self.per_method = W.HTML("")
        self.run_select = W.Dropdown(options=_run_options(dash, "train"), description="run",
                                     layout=W.Layout(width="60%"))
        self.run_select.observe(lambda c: c["new"] and not self._refreshing and self.load_run(
            self.dash.paths["runs"] / c["new"]), "value")
        self.eval_job = JobPanel("Evaluate on test", method="evaluate")
        self.eval_job.start.on_click(lambda _: self.evaluate())
        self.eval_job.on_done.append(lambda res: self.show_eval(res["visual"]))
        self._steps: dict[int, float] = {}  # optimiser step -> train loss
        self._epochs: dict[int, dict] = {}  # epoch -> its metrics (history.jsonl)
        self._roc: dict = {}
        self._refreshing = False
        self._last_draw = 0.0
        self._lock = threading.Lock()
        self.widget = W.VBox([
            W.HBox([self.preset, self.preset_note]),
            W.HBox([W.VBox([W.HTML("<b>Model</b>"), self.model_form.widget],
                           layout=W.Layout(margin="0 24px 0 0")),
                    W.VBox([W.HTML("<b>Training</b>"), self.train_form.widget])],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.sbi_button, self.sbi_note]), self.sbi_samples,
            W.HBox([self.name, self.resume]), self.job.widget,
            W.HBox([self.loss_plot, self.roc_plot], layout=W.Layout(flex_flow="row wrap")),
            self.metrics,
            W.HTML("<h3>Runs</h3>"), self.run_select, self.eval_job.widget, self.per_method])
        if self.run_select.value:
            self.load_run(self.dash.paths["runs"] / self.run_select.value)

    def show_pseudo_fakes(self) -> None:
        """Sample triples (real | pseudo-fake | mask) of the Data tab's processed folder."""
        import cv2

        from dflab.visual.pseudo_fakes import sample_triples

        try:
            triples = sample_triples(self.dash.data_tab.processed, 4, self.dash.cfg.env.seed)
        except Exception as exc:  # no folder yet, or no landmarks in it
            self.sbi_samples.children, self.sbi_note.value = (), error_html(exc)
            return

        def jpeg(rgb_or_gray):
            img = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray,
                                                                         cv2.COLOR_RGB2BGR)
            return W.Image(value=cv2.imencode(".jpg", img)[1].tobytes(), format="jpg",
                           width=96, height=96)

        self.sbi_samples.children = [W.HBox([jpeg(a) for a in t],
                                            layout=W.Layout(margin="0 16px 8px 0"))
                                     for t in triples]
        self.sbi_note.value = ("<b>real | self-blended pseudo-fake | blend mask</b>: what "
                               "<code>pseudo_fakes: sbi</code> trains on (a new fake of every "
                               "crop each epoch)")

    def apply_preset(self, name: str) -> None:
        """Load a preset's data, preprocessing, model, training and evaluation settings into the
        lab config and the forms (the data root and other environment settings stay)."""
        from dflab.core.config import load_config, preset_path

        if name == "(as loaded)":
            return
        try:
            self.dash.use_config(load_config(preset_path(name)), name)
        except Exception as exc:
            self.preset_note.value = error_html(exc)

    def start(self) -> None:
        if not self.dash.data_tab._apply(self.job, self.model_form, self.train_form):
            return
        name = self.name.value or time.strftime("%Y%m%d-%H%M%S")
        self.name.value = name
        # a detached process: the run goes on when the page is reloaded or the kernel restarts
        self.job.run_detached(self.dash.lab, name=name, processed=str(self.dash.data_tab.processed),
                              resume=self.resume.value)

    def show_job(self, job) -> None:
        """A training job this panel follows (started here, before a reload or elsewhere): its
        name, and what its run folder holds so far (a resumed run's curve), then live steps."""
        self.name.value = job.folder.name.removeprefix("train-")
        self.load_run(job.folder)

    def on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, StepLoss):
                self._steps[event.step] = event.loss
            elif isinstance(event, EpochMetrics):
                self._epochs[event.epoch] = event.metrics
                self._roc = {**event.roc, "epoch": event.epoch}
            else:
                return
            force = isinstance(event, EpochMetrics)
            if force or time.monotonic() - self._last_draw > self.LIVE_INTERVAL:
                self._last_draw = time.monotonic()
                self.draw()

    def draw(self) -> None:
        """Loss per optimiser step (from the run's event log) with each epoch's train and val
        loss at the step that ended it; the newest epoch's validation ROC."""
        import plotly.graph_objects as go

        fig = go.Figure()
        if self._steps:
            s = sorted(self._steps)
            fig.add_trace(go.Scatter(x=s, y=[self._steps[k] for k in s],
                                     name="train loss (per step)", mode="lines",
                                     line={"width": 1}))
        epochs = [self._epochs[k] for k in sorted(self._epochs)]
        if epochs:
            xs = [e.get("step", e["epoch"]) for e in epochs]
            text = [f"epoch {e['epoch']}" for e in epochs]
            fig.add_trace(go.Scatter(x=xs, y=[e["train_loss"] for e in epochs], text=text,
                                     name="train loss (epoch mean)", mode="lines+markers"))
            fig.add_trace(go.Scatter(x=xs, y=[e["val_loss"] for e in epochs], text=text,
                                     name="val loss (end of epoch)", mode="lines+markers"))
        steps_known = all("step" in e for e in epochs)
        fig.update_layout(title="Loss", height=340, margin={"t": 40, "b": 40},
                          xaxis_title="optimiser step" if steps_known else "epoch",
                          legend={"orientation": "h", "y": -0.25})
        show_figure(self.loss_plot, fig)
        roc = go.Figure(go.Scatter(x=self._roc.get("fpr", []), y=self._roc.get("tpr", []),
                                   name="val ROC", mode="lines"))
        roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"},
                                 name="chance"))
        at = f" (epoch {self._roc['epoch']})" if "epoch" in self._roc else ""
        roc.update_layout(title=f"Validation ROC{at}", xaxis_title="FPR", yaxis_title="TPR",
                          height=340, margin={"t": 40, "b": 40})
        show_figure(self.roc_plot, roc)
        if epochs:
            import pandas as pd

            cols = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_f1", "val_auc",
                    "val_eer", "lr"]
            df = pd.DataFrame(epochs)
            df = df[[c for c in cols if c in df]]
            self.metrics.value = df.to_html(index=False, float_format=lambda v: f"{v:.4g}")
        else:
            self.metrics.value = ""

    def load_run(self, run: Path) -> None:
        """Re-read a run folder: its epochs, its per-step losses (the event log of the jobs that
        trained it), the newest validation ROC and the test evaluation; nothing lives only in
        memory."""
        from dflab.core.jobs import Job
        from dflab.core.files import read_json
        from dflab.core.runs import run_history

        job = Job(run)
        steps = {e.step: e.loss for e in job.read_events(0)[0] if isinstance(e, StepLoss)}
        epochs = {h["epoch"]: h for h in run_history(run)} if (run / "history.jsonl").exists() \
            else {}
        roc = read_json(run / "val_roc.json") if (run / "val_roc.json").exists() else {}
        with self._lock:
            self._steps, self._epochs, self._roc = steps, epochs, roc
            self.draw()
        self.refresh_runs(select=run.name)
        ev = run / "eval_test.json"
        if ev.exists():
            self.show_eval(json.loads(ev.read_text())["visual"])
        else:
            self.per_method.value = ""

    def refresh_runs(self, select: str = "") -> None:
        """The runs dropdown, newest first, each with its state; ``select`` picks one."""
        options = _run_options(self.dash, "train")
        self._refreshing = True
        try:
            set_options(self.run_select, options, select or None)
        finally:
            self._refreshing = False

    @property
    def run(self) -> Path | None:
        return self.dash.paths["runs"] / self.run_select.value if self.run_select.value else None

    def evaluate(self) -> None:
        if self.run is None:
            self.eval_job.status.value = "train a model first"
            return
        self.eval_job.run_detached(self.dash.lab, name=self.run.name, run=str(self.run))

    def show_eval(self, rep: dict) -> None:
        rows = [(f"video · {m}", f"AUC {auc_text(v)}, acc {v['accuracy']:.3f}, n {v['n']}")
                for m, v in rep["video_per_method"].items()]
        self.per_method.value = ("<h4>Test results</h4>" + report_table({"visual": rep})
                                 + table_html(rows))


class ForensicsTab:
    def __init__(self, dash: "Dashboard"):
        self.dash = dash
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
        fused = _newest(dash, "fuse")
        if fused:
            self.show_fused(fused)
        forensic = _newest(self.dash, "forensic")
        if forensic is not None and (forensic / "refine.json").is_file():
            self.show_refine(forensic)

    @property
    def processed(self) -> Path:
        return self.dash.data_tab.processed

    def extract(self) -> None:
        self.feat_job.run_detached(self.dash.lab, name=self.processed.name,
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
        set_options(self.frame, opts)
        if (self.processed / "features.csv").exists():
            set_options(self.feature, feature_names(), self.feature.value or "fft_grid_peak_2")

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
        self.mlp_job.run_detached(self.dash.lab, processed=str(self.processed))

    def fuse(self) -> None:
        visual = self.dash.train_tab.run
        if visual is None:
            self.fuse_job.status.value = error_html("train a visual model (Train tab) first")
            return
        self.fuse_job.run_detached(self.dash.lab, run=str(visual), processed=str(self.processed))

    def show_fused(self, run: Path) -> None:
        ev = run / "eval_test.json"
        if ev.exists():
            self.fused.value = (f"<p>{html.escape(run.name)}</p>"
                                + report_table(json.loads(ev.read_text())))

    def refine(self) -> None:
        run = _newest(self.dash, "forensic")
        if run is None:
            self.refine_job.status.value = error_html("train the forensic MLP first")
            return
        self.refine_job.run(self.dash.lab.refine_features, run=run,
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
        run = _newest(self.dash, "forensic")
        if run is None or self.front.value is None:
            return
        try:
            path = self.dash.lab.save_feature_subset(run, self.front.value, self.subset_name.value)
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


SORTS = ["most wrong first", "sync score, most out of sync first"]
SHOW = ["misclassified", "all frames"]


class InspectTab:
    """Misclassified (or all) test frames filtered by method, compression, dataset and confidence,
    most wrong first; a click shows the full frame with its box, the crop, the metadata and the scores of
    both models (visual run and, when one exists, the forensic MLP)."""

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
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
                              W.HBox([self.which, self.min_margin, self.sort]), self.summary, self.gallery,
                              W.HBox([self.frame_image,
                                      W.VBox([W.HTML("<b>crop</b>"), self.crop_image]),
                                      W.VBox([self.cam_note, self.cam_image, self.cam_method]),
                                      self.detail])])

    def refresh(self) -> None:
        import numpy as np
        import pandas as pd

        run = self.dash.train_tab.run
        path = run / "predictions_test.csv" if run else None
        if path is None or not path.exists():
            self.summary.value = "No test predictions yet: train a run and evaluate it on test."
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
        forensic = _newest(self.dash, "forensic")
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
        from dflab.core.files import read_json

        processed = str(self.dash.data_tab.processed)
        for run in self.dash.lab.runs("fuse"):
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
        processed = self.dash.data_tab.processed
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

        processed = self.dash.data_tab.processed
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

        run = self.dash.train_tab.run
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


def download_html(path: str | Path) -> str:
    """Under Voila (``make lab``): a link to ``path`` served by Voila's file handler, through a
    hard link (or a copy) in ``downloads/`` beside the served notebook (the kernel's working
    folder: ``notebooks/downloads`` for ``make lab``), the only folder ``make lab`` lets it
    serve; elsewhere an empty string (Colab gets a download button instead)."""
    import os

    base = os.environ.get("VOILA_BASE_URL")
    path = Path(path)
    if base is None or not path.is_file():
        return ""
    name = f"{path.parent.name}-{path.name}"
    downloads = Path.cwd() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    link = downloads / name
    link.unlink(missing_ok=True)
    try:  # a hard link costs no space; Voila refuses symbolic links that leave its folder
        os.link(path, link)
    except OSError:  # another file system
        import shutil

        shutil.copy2(path, link)
    href = f"{base.rstrip('/')}/voila/files/downloads/{name}"
    return (f"<p><a href='{html.escape(href)}' download='{html.escape(path.name)}'>"
            f"⬇ Download {html.escape(path.name)}</a> ({path.stat().st_size / 2**20:.1f} MiB)</p>")


class ExportTab:
    """ONNX export of the Train tab's run, and a verdict on an uploaded image or video with that
    run's best model (its fuse run when there is one: visual, forensic and fused)."""

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        self.job = JobPanel("Export ONNX")
        self.job.start.on_click(lambda _: self.export())
        self.job.on_done.append(lambda res: self.show_export(res))
        self.result = W.HTML("")
        self.upload = W.FileUpload(accept="image/*,video/*", multiple=False,
                                   description="Upload image/video",
                                   layout=W.Layout(width="auto"))
        self.upload_name = W.HTML("")
        self.upload.observe(lambda _: self._show_upload(), "value")
        self.predict_job = JobPanel("Predict")
        self.predict_job.start.on_click(lambda _: self.predict())
        self.predict_job.on_done.append(lambda res: self.show_prediction(res))
        self.predict_button = self.predict_job.start
        self.prediction: Any = None
        self.verdict = W.HTML("")
        self.plot = W.Output()
        self.exported: Path | None = None
        self.colab_download = W.Button(description="Download the model", icon=icon("download"),
                                     layout=W.Layout(display="none"))
        self.colab_download.on_click(lambda _: self.save_to_colab())
        self.widget = W.VBox([self.job.widget, self.result, self.colab_download,
                              W.HTML("<h3>Predict</h3>"),
                              W.HBox([self.upload, self.upload_name]),
                              self.predict_job.widget, self.verdict, self.plot])

    def export(self) -> None:
        run = self.dash.train_tab.run
        if run is None:
            self.job.status.value = "train a model first"
            return
        self.job.run(self.dash.lab.export, run=run)

    def show_export(self, res: Any) -> None:
        self.result.value = table_html([
            ("file", under_root(res.onnx, self.dash.paths["data_root"])),
            ("size", f"{res.bytes / 2**20:.1f} MiB"),
            ("onnxruntime vs torch max |diff|", f"{res.max_abs_diff:.2e}"),
            ("parity", "ok" if res.parity_ok else "FAILED")]) + download_html(res.onnx)
        self.exported = Path(res.onnx)
        self.colab_download.layout.display = "" if in_colab() else "none"

    def save_to_colab(self) -> None:
        """Colab: the browser's download of the exported model (google.colab.files)."""
        from google.colab import files  # only offered on Colab

        if self.exported is not None:
            files.download(str(self.exported))

    def _show_upload(self) -> None:
        up = self._uploaded()
        self.upload_name.value = (f"&nbsp;<b>{html.escape(up[0])}</b> "
                                  f"({len(up[1]) / 2**20:.1f} MiB)" if up else "")

    def _uploaded(self) -> tuple[str, bytes] | None:
        v = self.upload.value
        if not v:
            return None
        if isinstance(v, dict):  # ipywidgets 7
            name, item = next(iter(v.items()))
            return name, bytes(item["content"])
        item = v[0]
        return item["name"], bytes(item["content"])

    def predict(self, path: Path | None = None) -> None:
        """Start scoring ``path`` (default: the uploaded file) in the Predict panel."""
        run = self.dash.train_tab.run
        if run is None:
            self.predict_job.status.value = "train a model first"
            return
        if path is None:
            up = self._uploaded()
            if up is None:
                self.predict_job.status.value = "upload an image or a video first"
                return
            path = self.dash.paths["cache"] / "uploads" / Path(up[0]).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(up[1])
        self.prediction = None
        self.predict_job.run(self.dash.lab.predict, file=path, model=run)

    def show_prediction(self, res: Any) -> None:
        import plotly.graph_objects as go

        self.prediction = res
        p = "-" if res.probability is None else f"{res.probability:.3f}"
        per_model = "".join(f"<br>{html.escape(m)}: p(fake) = {v:.3f}"
                            for m, v in (res.data.get("probabilities") or {}).items())
        self.verdict.value = (f"<h3>{html.escape(res.verdict.upper())}</h3> p(fake) = {p} "
                              f"(threshold {res['threshold']:.3f}, {res['backend']}, "
                              f"{html.escape(Path(res['model']).name)}){per_model}")
        frames = res["frames"]
        fig = go.Figure(go.Scatter(x=[f["frame_index"] for f in frames],
                                   y=[f["prob"] for f in frames], mode="lines+markers",
                                   name="fused" if per_model else "visual"))
        for key, name in (("prob_visual", "visual"), ("prob_forensic", "forensic")):
            if frames and key in frames[0]:
                fig.add_trace(go.Scatter(x=[f["frame_index"] for f in frames],
                                         y=[f[key] for f in frames], mode="lines", name=name))
        fig.add_hline(y=res["threshold"], line_dash="dot")
        fig.update_layout(title="p(fake) per frame", xaxis_title="frame", yaxis_range=[0, 1],
                          height=300)
        show_figure(self.plot, fig)

"""The Train tab: the model and training settings (a preset or by hand), self-blended samples, live
loss and ROC while a run trains, and the test evaluation of the chosen run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import ipywidgets as W

from dflab.core.config import list_presets, load_config, preset_path
from dflab.core.events import EpochMetrics, Event, StepLoss
from dflab.core.files import read_json
from dflab.core.jobs import Job
from dflab.core.runs import run_history, run_state

from ..jobs import JobPanel
from ..session import Session
from ..widgets import (ConfigForm, auc_text, error_html, icon, report_table, set_options,
                       show_figure, table_html)
from .base import Step, Tab


def _trained(s: Session) -> bool:
    return s.run is not None and run_state(s.run) == "done"


class TrainTab(Tab):
    """A form from the model and train configs; live loss and ROC while training runs."""

    title = "Train"
    steps = (Step("visual model", _trained),
             Step("test AUC", lambda s: _trained(s) and (s.run / "eval_test.json").exists()))

    LIVE_INTERVAL = 1.0  # seconds between plot redraws

    def __init__(self, session: Session):
        # Long on purpose: the tab's widgets and their layout.
        super().__init__(session)
        self.preset = W.Dropdown(options=["(as loaded)", *list_presets()],
                                 value=session.preset if session.preset in list_presets() else
                                 "(as loaded)", description="preset")
        self.preset_note = W.HTML(session.preset_note)
        self.preset.observe(lambda c: self.apply_preset(c["new"]), "value")
        self.model_form = ConfigForm(session.cfg.model, "model",
                                     advanced=["weights_path", "head_hidden", "dropout"])
        self.train_form = ConfigForm(session.cfg.train, "train",
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
        self.job.on_done.append(lambda res: session.select(run=res.run))
        self.loss_plot = W.Output(layout=W.Layout(flex="3 1 560px", min_width="0"))
        self.roc_plot = W.Output(layout=W.Layout(flex="2 1 380px", min_width="0"))
        self.metrics = W.HTML("")
        self.per_method = W.HTML("")
        self.run_select = W.Dropdown(options=self.session.run_options("train"), description="run",
                                     layout=W.Layout(width="60%"))
        self.run_select.observe(lambda c: c["new"] and not self._refreshing and session.select(
            run=session.paths["runs"] / c["new"]), "value")
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
        self.job_panels = [self.job, self.eval_job]
        session.add_forms(self.model_form, self.train_form)
        if session.run is not None:
            self.load_run(session.run)

    def on_change(self, what: set[str]) -> None:
        if "run" in what and self.session.run is not None:
            self.load_run(self.session.run)
        elif what & {"runs", "data_root"}:
            self.refresh_runs(select=self.session.run.name if self.session.run else "")
        if "config" in what:
            self.preset_note.value = f"preset <b>{self.session.preset}</b> loaded"

    def show_pseudo_fakes(self) -> None:
        """Sample triples (real | pseudo-fake | mask) of the Data tab's processed folder."""
        import cv2

        from dflab.visual.pseudo_fakes import sample_triples

        try:
            triples = sample_triples(self.session.processed, 4, self.session.cfg.env.seed)
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
        if name == "(as loaded)":
            return
        try:
            self.session.use_config(load_config(preset_path(name)), name)
        except Exception as exc:
            self.preset_note.value = error_html(exc)

    def start(self) -> None:
        if not self.session.apply(self.job, "model", "train"):
            return
        name = self.name.value or time.strftime("%Y%m%d-%H%M%S")
        self.name.value = name
        # a detached process: the run goes on when the page is reloaded or the kernel restarts
        self.job.run_detached(self.session.lab, name=name, processed=str(self.session.processed),
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
        options = self.session.run_options("train")
        self._refreshing = True
        try:
            set_options(self.run_select, options, select or None)
        finally:
            self._refreshing = False

    def evaluate(self) -> None:
        run = self.session.run
        if run is None:
            self.eval_job.status.value = "train a model first"
            return
        self.eval_job.run_detached(self.session.lab, name=run.name, run=str(run))

    def show_eval(self, rep: dict) -> None:
        rows = [(f"video · {m}", f"AUC {auc_text(v)}, acc {v['accuracy']:.3f}, n {v['n']}")
                for m, v in rep["video_per_method"].items()]
        self.per_method.value = ("<h4>Test results</h4>" + report_table({"visual": rep})
                                 + table_html(rows))

"""The Data tab: sources (demo set, a local folder, FF++, DFDC), preprocessing, dataset statistics."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from dflab.data.stats import dataset_stats, plot_stats

from ..jobs import JobPanel
from ..session import Session
from ..widgets import ConfigForm, show_figure, table_html
from .base import Step, Tab


def _have_videos(s: Session) -> bool:
    if s.cfg.data.source == "demo":
        return (s.paths["data_root"] / "demo" / "labels.csv").exists()
    return bool(s.cfg.data.root) and Path(s.cfg.data.root).exists()


def _indexed(s: Session) -> bool:
    return (s.processed / "index.csv").exists()


class DataTab(Tab):
    """Sources (demo, local folder, FF++, DFDC), preprocessing, and dataset statistics."""

    title = "Data"
    steps = (Step("videos", lambda s: _have_videos(s) or _indexed(s)), Step("face crops", _indexed))

    def __init__(self, session: Session):
        # Long on purpose: the tab's widgets and their layout.
        super().__init__(session)
        cfg = session.cfg
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
                                    "decode", "padding", "min_confidence", "workers",
                                    "save_frames", "audio"],
                                   advanced=["detector_weights", "decode", "padding",
                                             "min_confidence", "workers", "save_frames"])
        # a Dask scheduler spreads preprocessing (and feature extraction) over machines
        self.cluster_form = ConfigForm(cfg.env, "env", ["cluster"])
        self.cluster_form.inputs["cluster"].placeholder = "(this machine) tcp://HOST:8786 or local:N"
        self.force = W.Checkbox(description="re-process videos made with other settings",
                                indent=False)
        self.pre_job = JobPanel("Preprocess", method="preprocess")
        self.pre_job.start.on_click(lambda _: self.preprocess())
        self.pre_job.on_done.append(lambda _: self._preprocessed())
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
        self.job_panels = [self.demo_job, self.ffpp_job, self.dfdc_job, self.pre_job]
        session.add_forms(self.where, self.demo_form, self.ffpp_form, self.dfdc_form, self.pre_form)
        # the source chosen here is the dataset every tab acts on (the context bar shows it)
        self.source.observe(lambda c: session.select(dataset=c["new"]), "value")
        self.show_summary()
        self.show_stats()

    @property
    def processed(self) -> Path:
        """The processed folder of the source chosen here (where Preprocess writes)."""
        return self.session.lab.processed_dir(source=self.source.value)

    def on_change(self, what: set[str]) -> None:
        if "dataset" in what and self.session.dataset in self.source.options:
            self.source.value = self.session.dataset  # chosen in the context bar
        if what & {"dataset", "data_root"}:
            self.show_summary()
            self.show_stats()

    def _preprocessed(self) -> None:
        """The folder just made becomes the selected dataset, its statistics shown."""
        if self.session.dataset == self.source.value:
            self.show_stats()
        self.session.select(dataset=self.source.value)

    # actions: form -> lab stage in a JobPanel --------------------------------------------------
    def _apply(self, panel: JobPanel, *forms: ConfigForm) -> bool:
        return self.session.apply(panel, forms=forms)

    def build_demo(self) -> None:
        if self._apply(self.demo_job, self.demo_form):
            self.demo_job.run_detached(self.session.lab, name="demo")

    def download_ffpp(self) -> None:
        if self._apply(self.ffpp_job, self.ffpp_form):
            self.ffpp_job.run(self.session.lab.download, dataset="ffpp",
                              servers=[self.ffpp_server.value] if self.ffpp_server.value else [],
                              accept_tos=self.ffpp_tos.value)

    def stream_dfdc(self) -> None:
        import os

        if self.kaggle_user.value and self.kaggle_key.value:
            os.environ["KAGGLE_USERNAME"] = self.kaggle_user.value
            os.environ["KAGGLE_KEY"] = self.kaggle_key.value
        if self._apply(self.dfdc_job, self.dfdc_form, self.pre_form):
            self.dfdc_job.run_detached(self.session.lab, name="dfdc", dataset="dfdc")

    def preprocess(self) -> None:
        if self._apply(self.pre_job, self.where, self.pre_form, self.cluster_form):
            self.pre_job.run_detached(self.session.lab, name=self.processed.name,
                                      force=self.force.value)

    # views ---------------------------------------------------------------------------------
    def show_summary(self) -> None:
        labels = self.session.paths["data_root"] / "demo" / "labels.csv"
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
        try:
            stats = dataset_stats(self.session.processed)
        except (FileNotFoundError, ValueError):
            self.stats_html.value = (f"Not preprocessed yet "
                                     f"({html.escape(str(self.session.processed))}).")
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

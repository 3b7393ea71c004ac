"""The dflab dashboard: one ipywidgets Tab per stage over the ``dflab`` backend (Environment
here; the others in ``tabs.py``).

Works with ipywidgets 7.7 (Colab) and 8 (Voila): titles are set with ``set_title``.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path

import ipywidgets as W

from dflab.core.config import LabConfig
from dflab.core.environment import in_colab, mount_drive
from dflab.core.jobs import warm_up
from dflab.lab import Lab

from .jobs import JobPanel
from .runs_tab import RunsTab
from .sync_tab import SyncTab
from .tabs import DataTab, ExportTab, ForensicsTab, InspectTab, TrainTab
from .widgets import ConfigForm, error_html, icon, mirror, table_html, under_root


class EnvironmentTab:
    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        self.info = W.HTML("")
        self.refresh_button = W.Button(description="Refresh", icon=icon("refresh"))
        self.form = ConfigForm(dash.cfg.env, "env", ["seed", "deterministic", "workers"])
        self.seed = self.form.inputs["seed"]
        self.apply_button = W.Button(description="Apply runtime settings")
        self.runtime = W.HTML("")
        # applied only by the button: typing creates nothing (the folder is checked first)
        self.data_root = W.Text(value=str(dash.paths["data_root"]), description="Data folder",
                                layout=W.Layout(width="60%"))
        self.root_button = W.Button(description="Use this folder", icon=icon("check"))
        self.root_note = W.HTML("")
        self.drive_button = W.Button(description="Mount Google Drive", icon=icon("drive"),
                                     layout=W.Layout(display="" if in_colab() else "none"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.apply_button.on_click(lambda _: self.apply())
        self.drive_button.on_click(lambda _: self.mount())
        self.root_button.on_click(lambda _: self.use_root())
        self.widget = W.VBox([
            W.HTML("<h3>GPU and machine</h3>"), self.refresh_button, self.info,
            W.HTML("<h3>Runtime</h3>"), self.form.widget, self.apply_button, self.runtime,
            W.HTML("<h3>Data</h3><p>Where demo sets, processed crops, features and runs go. "
                   "Nothing is created until you press <i>Use this folder</i>.</p>"),
            W.HBox([self.data_root, self.root_button, self.drive_button]), self.root_note,
        ])
        self.report: dict = {}

    def refresh(self) -> None:
        res = self.dash.lab.environment()
        self.report = res.report
        self.info.value = table_html(res.rows())

    def apply(self) -> None:
        try:
            self.form.apply(self.dash.cfg)
        except ValueError as exc:
            self.runtime.value = error_html(exc)
            return
        self.runtime.value = table_html(self.dash.lab.runtime())

    def mount(self) -> None:
        root = mount_drive() / "dflab"
        self.data_root.value = str(root)
        self.use_root()

    def use_root(self) -> None:
        """Check the typed folder, then make it the data root (its sub-folders are created)."""
        from dflab.core.environment import check_data_root

        try:
            root = check_data_root(self.data_root.value, self.dash.paths["data_root"])
            self.dash.set_data_root(str(root))
        except (ValueError, OSError) as exc:
            self.root_note.value = error_html(exc)
            return
        self.data_root.value = str(root)
        self.root_note.value = f"data root: <b>{html.escape(str(root))}</b>"


def _no_null_tooltips(widget: W.Widget) -> None:
    """Give every described widget without a tooltip an empty one: ipywidgets 8 writes a
    missing tooltip into its label as the text "null", which the browser shows on hover."""
    if "tooltip" in widget.trait_names() and widget.tooltip is None:
        widget.tooltip = ""
    for child in getattr(widget, "children", ()):
        _no_null_tooltips(child)


class StartHere:
    """The lab's stages in order, each marked done or to do from what the data folder holds,
    the first one to do highlighted as the next step; a click opens that stage's tab."""

    # what each stage leaves, and its tab (names unlike the tabs' own buttons: "Preprocess",
    # "Train" and "Predict" are those)
    STEPS = [("videos", "Data"), ("face crops", "Data"), ("visual model", "Train"),
             ("test AUC", "Train"), ("forensic features", "Forensics"), ("ONNX model", "Export")]

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        self.buttons = [W.Button(description=f"{i + 1} · {name}", layout=W.Layout(width="auto"))
                        for i, (name, _) in enumerate(self.STEPS)]
        for b, (_, tab) in zip(self.buttons, self.STEPS):
            b.on_click(lambda _b, tab=tab: self.open(tab))
        self.next = W.HTML("")
        self.widget = W.HBox([W.HTML("<b>Start here:</b>"), *self.buttons, self.next],
                             layout=W.Layout(flex_flow="row wrap", align_items="center"))

    def open(self, tab: str) -> None:
        titles = [t for t, _ in self.dash.tabs]
        self.dash.tab.selected_index = titles.index(tab)

    def states(self) -> list[bool]:
        """Done or not, per step, from the files of the chosen dataset and visual run."""
        from dflab.core.runs import run_state

        dash = self.dash
        processed = dash.data_tab.processed
        source = dash.data_tab.source.value
        run = dash.train_tab.run
        root = dash.cfg.data.root
        have_videos = ((dash.paths["data_root"] / "demo" / "labels.csv").exists()
                       if source == "demo" else bool(root) and Path(root).exists())
        indexed = (processed / "index.csv").exists()
        trained = run is not None and run_state(run) == "done"
        return [have_videos or indexed, indexed, trained,
                trained and (run / "eval_test.json").exists(),
                (processed / "features.csv").exists(),
                trained and (run / "model.onnx").exists()]

    def show(self) -> None:
        done = self.states()
        todo = next((i for i, d in enumerate(done) if not d), None)
        for i, (b, d) in enumerate(zip(self.buttons, done)):
            name = self.STEPS[i][0]
            b.description = f"{'✓' if d else i + 1} · {name}"
            b.button_style = "primary" if i == todo else "success" if d else ""
            b.tooltip = (f"{name}: done" if d else f"{name}: to do") + \
                f" (the {self.STEPS[i][1]} tab)"
        self.next.value = (f"<span style='font-size:12px;color:#455a64;margin-left:8px'>next: "
                           f"<b>{self.STEPS[todo][0]}</b> in the {self.STEPS[todo][1]} tab</span>"
                           if todo is not None else
                           "<span style='font-size:12px;color:#2e7d32;margin-left:8px'>every "
                           "stage done for this dataset and run</span>")


class ContextBar:
    """What the tabs act on, named and changeable in one place: the dataset (the Data tab's
    source, whose processed folder Train, Forensics and Inspect read) and the visual run (the
    Train tab's, which Evaluate, Fuse, Inspect and Export use)."""

    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        d, t = dash.data_tab, dash.train_tab
        self.source = W.Dropdown(options=d.source.options, value=d.source.value,
                                 description="Dataset", layout=W.Layout(width="260px"))
        self.run = W.Dropdown(description="Visual run", layout=W.Layout(width="420px"))
        W.link((self.source, "value"), (d.source, "value"))
        mirror(t.run_select, self.run)
        self.info = W.HTML("")
        self.steps = StartHere(dash)
        d.source.observe(lambda _: dash.data_changed(), "value")
        t.run_select.observe(lambda _: self.show(), "value")
        self.widget = W.VBox([self.steps.widget, W.HBox([self.source, self.run], layout=W.Layout(
            flex_flow="row wrap")), self.info], layout=W.Layout(
            border="1px solid #cfd8dc", padding="4px 8px", margin="0 0 6px 0"))
        self.show()

    def show(self) -> None:
        from dflab.core.runs import run_state

        paths = self.dash.paths
        processed = self.dash.data_tab.processed
        ready = (processed / "index.csv").exists()
        run = self.dash.train_tab.run
        self.info.value = (
            f"<span style='font-size:12px;color:#455a64'>data folder "
            f"<code>{html.escape(str(paths['data_root']))}</code> · crops "
            f"<code>{html.escape(under_root(processed, paths['data_root']))}</code> "
            f"{'ready' if ready else '(not preprocessed yet: Data tab)'} · visual run "
            f"{html.escape(run.name) + ' (' + run_state(run) + ')' if run else 'none yet (Train tab)'}"
            f"</span>")
        self.steps.show()


class Dashboard:
    """``Dashboard().widget`` is the whole app; ``show()`` displays it. Every button calls
    ``self.lab`` (a :class:`dflab.Lab`), the object the CLI calls too.

    Long jobs run detached (:mod:`dflab.core.jobs`); a new dashboard follows the ones still running,
    and with ``watch`` keeps looking for jobs started after it was built (another page, the CLI,
    or a page served from a kernel Voila started ahead of time)."""

    def __init__(self, cfg: LabConfig | None = None, preset: str = "", preset_note: str = "",
                 data_root: str = "", watch: bool = False):
        self.lab = Lab(cfg or LabConfig(), data_root=data_root)
        self.preset, self.preset_note = preset, preset_note
        self.env_tab = EnvironmentTab(self)
        self.data_tab = DataTab(self)
        self.train_tab = TrainTab(self)
        self.forensics_tab = ForensicsTab(self)
        self.inspect_tab = InspectTab(self)
        self.export_tab = ExportTab(self)
        self.runs_tab = RunsTab(self)
        self.sync_tab = SyncTab(self)
        self.tabs = [("Environment", self.env_tab), ("Data", self.data_tab),
                     ("Train", self.train_tab), ("Forensics", self.forensics_tab),
                     ("Audio-visual", self.sync_tab), ("Inspect", self.inspect_tab),
                     ("Export", self.export_tab), ("Runs", self.runs_tab)]
        self.tab = W.Tab(children=[t.widget for _, t in self.tabs])
        for i, (title, _) in enumerate(self.tabs):
            self.tab.set_title(i, title)
        self.header = W.HTML("<h2 style='margin:4px 0'>dflab · deepfake detection lab</h2>")
        self.context = ContextBar(self)
        self.widget = W.VBox([self.header, self.context.widget, self.tab],
                             layout=W.Layout(max_width="1400px"))
        self.env_tab.refresh()
        _no_null_tooltips(self.widget)
        for panel in self.panels():
            panel.on_end.append(lambda _state: self.job_ended())
            panel.data_root = lambda: self.paths["data_root"]
        self.reattach()
        warm_up()  # the jobs' fork server imports torch now, so the first click starts at once
        if watch:  # a preheated Voila kernel builds the page before the job it must show starts
            threading.Thread(target=self._watch_jobs, daemon=True,
                             name="dflab-watch-jobs").start()

    WATCH_S = 2.0  # how often running jobs started elsewhere are looked for

    def _watch_jobs(self) -> None:
        import logging

        while True:
            time.sleep(self.WATCH_S)
            try:
                self.reattach()
            except Exception:  # a half-written job folder: look again next time
                logging.getLogger(__name__).debug("reattach failed", exc_info=True)

    def panels(self) -> list[JobPanel]:
        """Every job panel of every tab."""
        return [v for _, t in self.tabs for v in vars(t).values() if isinstance(v, JobPanel)]

    def reattach(self) -> list[str]:
        """Follow the detached jobs still running (started before a reload, a kernel restart
        or from another browser): each panel takes the newest running job of its method.
        Returns the job folders attached to."""
        from dflab.core.jobs import list_jobs

        attached = []
        running = [j for j in list_jobs(self.paths["data_root"], self.paths["runs"])
                   if j.running]
        for panel in self.panels():
            job = next((j for j in running if panel.method and j.method == panel.method), None)
            if job is None or panel.running:
                continue
            panel.attach(job)
            attached.append(str(job.folder))
        return attached

    def job_ended(self) -> None:
        """A job ended (done, failed, cancelled): the run lists show its new state."""
        try:
            self.runs_tab.refresh()
            self.train_tab.refresh_runs()
            self.context.show()
        except Exception:  # a damaged run folder must not break the panel that finished
            import logging

            logging.getLogger(__name__).exception("refreshing the runs after a job failed")

    @property
    def cfg(self) -> LabConfig:
        return self.lab.cfg

    @property
    def paths(self) -> dict[str, Path]:
        return self.lab.paths

    def use_config(self, cfg: LabConfig, preset: str = "") -> None:
        """Take every stage of ``cfg`` but the environment (data root, seed, workers stay) and
        show it in the forms."""
        for stage in ("data", "preprocess", "features", "model", "train", "eval", "export",
                      "sync"):
            setattr(self.cfg, stage, getattr(cfg, stage))
        self.preset = preset
        d = self.data_tab
        for form in (d.where, d.demo_form, d.ffpp_form, d.dfdc_form):
            form.load(self.cfg.data)
        d.pre_form.load(self.cfg.preprocess)
        self.train_tab.model_form.load(self.cfg.model)
        self.train_tab.train_form.load(self.cfg.train)
        self.train_tab.preset_note.value = f"preset <b>{preset}</b> loaded"

    def set_data_root(self, root: str) -> None:
        self.lab.set_data_root(root)
        self.data_changed()
        self.train_tab.refresh_runs()
        self.runs_tab.refresh()

    def data_changed(self) -> None:
        """The data root or the source changed: every view of the dataset is re-read."""
        self.data_tab.show_summary()
        self.data_tab.show_stats()
        self.forensics_tab.refresh()
        self.context.show()

    def show(self):
        from IPython.display import display

        display(self.widget)
        return self


def show(data_root: str = "", config: str = "") -> Dashboard:
    """Build and display the dashboard (the notebook's one call). ``config``: a YAML preset;
    defaults to ``$DFLAB_CONFIG`` when set."""
    import os

    return Dashboard(*initial_config(config or os.environ.get("DFLAB_CONFIG", "")),
                     data_root=data_root, watch=True).show()


def initial_config(config: str = "", gpu: bool | None = None) -> tuple[LabConfig, str, str]:
    """(config, preset name, a line saying why) for a new dashboard: the given YAML file or
    preset, else the preset that learns on the hardware at hand (``cpu`` without a GPU)."""
    from dflab.core.config import default_preset, load_config, preset_path

    if config:
        return load_config(config), Path(config).stem, f"config <b>{config}</b>"
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    preset = default_preset(gpu)
    note = ("GPU found: the <b>default</b> preset (EfficientNet-B4, ImageNet weights)" if gpu
            else "No GPU found: the <b>cpu</b> preset is proposed (resnet10t at 112 px from "
                 "scratch; learns the demo set in about two minutes on 2 cores)")
    return load_config(preset_path(preset)), preset, note

"""The dflab dashboard: a context bar over one ipywidgets Tab per stage (``app/tabs/``), all
over one :class:`~app.session.Session` (the ``dflab.Lab`` and what is selected).

Works with ipywidgets 7.7 (Colab) and 8 (Voila): titles are set with ``set_title``.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path

import ipywidgets as W

from dflab.core.config import LabConfig
from dflab.core.jobs import list_jobs, warm_up
from dflab.core.runs import run_state
from dflab.lab import Lab

from .jobs import JobPanel
from .session import Session
from .tabs import TABS, Step, Tab
from .widgets import set_options, under_root

log = logging.getLogger(__name__)


def _no_null_tooltips(widget: W.Widget) -> None:
    """Give every described widget without a tooltip an empty one: ipywidgets 8 writes a
    missing tooltip into its label as the text "null", which the browser shows on hover."""
    if "tooltip" in widget.trait_names() and widget.tooltip is None:
        widget.tooltip = ""
    for child in getattr(widget, "children", ()):
        _no_null_tooltips(child)


class StartHere:
    """The lab's stages in order (the tabs' own steps), each marked done or to do from what the
    data folder holds, the first one to do highlighted as the next step; a click opens that
    stage's tab."""

    def __init__(self, session: Session, tabs: list[Tab], open_tab):
        self.session = session
        self.steps: list[tuple[Step, Tab]] = [(step, tab) for tab in tabs for step in tab.steps]
        self.buttons = [W.Button(description=f"{i + 1} · {step.name}",
                                 layout=W.Layout(width="auto"))
                        for i, (step, _) in enumerate(self.steps)]
        for b, (_, tab) in zip(self.buttons, self.steps):
            b.on_click(lambda _b, tab=tab: open_tab(tab))
        self.next = W.HTML("")
        self.widget = W.HBox([W.HTML("<b>Start here:</b>"), *self.buttons, self.next],
                             layout=W.Layout(flex_flow="row wrap", align_items="center"))

    def states(self) -> list[bool]:
        """Done or not, per step, for the selected dataset and visual run."""
        return [step.done(self.session) for step, _ in self.steps]

    def show(self) -> None:
        done = self.states()
        todo = next((i for i, d in enumerate(done) if not d), None)
        for i, (b, d) in enumerate(zip(self.buttons, done)):
            step, tab = self.steps[i]
            b.description = f"{'✓' if d else i + 1} · {step.name}"
            b.button_style = "primary" if i == todo else "success" if d else ""
            b.tooltip = (f"{step.name}: done" if d else f"{step.name}: to do") + \
                f" (the {tab.title} tab)"
        self.next.value = (f"<span style='font-size:12px;color:#455a64;margin-left:8px'>next: "
                           f"<b>{self.steps[todo][0].name}</b> in the {self.steps[todo][1].title} "
                           f"tab</span>" if todo is not None else
                           "<span style='font-size:12px;color:#2e7d32;margin-left:8px'>every "
                           "stage done for this dataset and run</span>")


class ContextBar:
    """What the tabs act on, named and changeable in one place: the dataset (a processed
    folder: a source's own, or another such as the talking set's) and the visual run."""

    def __init__(self, session: Session, tabs: list[Tab], open_tab):
        self.session = session
        self.source = W.Dropdown(options=session.datasets(), value=session.dataset,
                                 description="Dataset", layout=W.Layout(width="260px"))
        self.run = W.Dropdown(options=session.run_options("train"), description="Visual run",
                              value=session.run.name if session.run else None,
                              layout=W.Layout(width="420px"))
        self.source.observe(lambda c: c["new"] and session.select(dataset=c["new"]), "value")
        self.run.observe(lambda c: c["new"] and session.select(
            run=session.paths["runs"] / c["new"]), "value")
        self.info = W.HTML("")
        self.steps = StartHere(session, tabs, open_tab)
        self.widget = W.VBox([self.steps.widget, W.HBox([self.source, self.run], layout=W.Layout(
            flex_flow="row wrap")), self.info], layout=W.Layout(
            border="1px solid #cfd8dc", padding="4px 8px", margin="0 0 6px 0"))
        self.show()

    def on_change(self, what: set[str]) -> None:
        s = self.session
        if what & {"dataset", "runs", "data_root"}:
            set_options(self.source, s.datasets(), s.dataset)
        if what & {"run", "runs", "data_root"}:
            set_options(self.run, s.run_options("train"), s.run.name if s.run else None)
        self.show()

    def show(self) -> None:
        s = self.session
        root, processed, run = s.paths["data_root"], s.processed, s.run
        ready = (processed / "index.csv").exists()
        self.info.value = (
            f"<span style='font-size:12px;color:#455a64'>data folder "
            f"<code>{html.escape(str(root))}</code> · crops "
            f"<code>{html.escape(under_root(processed, root))}</code> "
            f"{'ready' if ready else '(not preprocessed yet: Data tab)'} · visual run "
            f"{html.escape(run.name) + ' (' + run_state(run) + ')' if run else 'none yet (Train tab)'}"
            f"</span>")
        self.steps.show()


class Dashboard:
    """``Dashboard().widget`` is the whole app; ``show()`` displays it. Every button calls
    ``self.lab`` (a :class:`dflab.Lab`), the object the CLI calls too.

    The tabs (:data:`app.tabs.TABS`) share one :class:`~app.session.Session` and hear its
    changes; each is also an attribute named after its title (``dash.data_tab``). Long jobs run
    detached (:mod:`dflab.core.jobs`); a new dashboard follows the ones still running, and with
    ``watch`` keeps looking for jobs started after it was built (another page, the CLI, or a
    page served from a kernel Voila started ahead of time)."""

    def __init__(self, cfg: LabConfig | None = None, preset: str = "", preset_note: str = "",
                 data_root: str = "", watch: bool = False):
        self.lab = Lab(cfg or LabConfig(), data_root=data_root)
        self.session = Session(self.lab, preset, preset_note)
        self.tabs: list[Tab] = [cls(self.session) for cls in TABS]
        for t in self.tabs:  # dash.data_tab, dash.audio_visual_tab, ...
            setattr(self, t.title.lower().replace("-", "_") + "_tab", t)
        self.tab = W.Tab(children=[t.widget for t in self.tabs])
        for i, t in enumerate(self.tabs):
            self.tab.set_title(i, t.title)
        self.header = W.HTML("<h2 style='margin:4px 0'>dflab · deepfake detection lab</h2>")
        self.context = ContextBar(self.session, self.tabs, self.open)
        for view in (*self.tabs, self.context):
            self.session.observe(view.on_change)
        self.widget = W.VBox([self.header, self.context.widget, self.tab],
                             layout=W.Layout(max_width="1400px"))
        _no_null_tooltips(self.widget)
        for panel in self.panels():
            panel.on_end.append(lambda _state: self.session.changed("runs"))
            panel.data_root = lambda: self.lab.paths["data_root"]
        self.reattach()
        warm_up()  # the jobs' fork server imports torch now, so the first click starts at once
        if watch:  # a preheated Voila kernel builds the page before the job it must show starts
            threading.Thread(target=self._watch_jobs, daemon=True,
                             name="dflab-watch-jobs").start()

    WATCH_S = 2.0  # how often running jobs started elsewhere are looked for

    def _watch_jobs(self) -> None:
        while True:
            time.sleep(self.WATCH_S)
            try:
                self.reattach()
            except Exception:  # a half-written job folder: look again next time
                log.debug("reattach failed", exc_info=True)

    def open(self, tab: Tab) -> None:
        self.tab.selected_index = self.tabs.index(tab)

    def panels(self) -> list[JobPanel]:
        """Every job panel of every tab, as each tab declares them."""
        return [panel for t in self.tabs for panel in t.job_panels]

    def reattach(self) -> list[str]:
        """Follow the detached jobs still running (started before a reload, a kernel restart
        or from another browser): each panel takes the newest running job of its method.
        Returns the job folders attached to."""
        attached = []
        running = [j for j in list_jobs(self.lab.paths["data_root"], self.lab.paths["runs"])
                   if j.running]
        for panel in self.panels():
            job = next((j for j in running if panel.method and j.method == panel.method), None)
            if job is None or panel.running:
                continue
            panel.attach(job)
            attached.append(str(job.folder))
        return attached

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

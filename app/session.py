"""What the dashboard's tabs share: the lab, the selection (dataset, visual run, clip) and the
settings forms. A tab reads the selection here and observes its changes; it never reads another
tab's widgets."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from dflab.core.config import DataConfig, LabConfig
from dflab.core.runs import run_state
from dflab.lab import Lab

from .widgets import ConfigForm, error_html

log = logging.getLogger(__name__)

#: what a change may name: the selected dataset, visual run or clip; "runs": a job ended, so
#: the runs and the processed folders may hold new results; the settings (a preset was
#: loaded); the data folder
CHANGES = ("dataset", "run", "clip", "runs", "config", "data_root")

STAGES = ("data", "preprocess", "features", "model", "train", "eval", "export", "sync")
SOURCES = next(f.metadata["choices"] for f in dataclasses.fields(DataConfig) if f.name == "source")


class Session:
    """The lab every button calls, what the tabs act on, and the forms that edit its config.

    ``dataset`` names a folder under ``<data root>/processed`` (a source's own, such as
    ``demo``, or another, such as the talking set's ``demo_av``); ``run`` is the visual run
    (a folder under ``<data root>/runs``, or None); ``clip`` a video of the dataset."""

    def __init__(self, lab: Lab, preset: str = "", preset_note: str = ""):
        self.lab = lab
        self.preset, self.preset_note = preset, preset_note
        self.dataset: str = lab.cfg.data.source
        runs = lab.runs("train")
        self.run: Path | None = runs[0] if runs else None
        self.clip = ""
        self._forms: list[ConfigForm] = []
        self._observers: list[Callable[[set[str]], None]] = []

    @property
    def cfg(self) -> LabConfig:
        return self.lab.cfg

    @property
    def paths(self) -> dict[str, Path]:
        return self.lab.paths

    @property
    def processed(self) -> Path:
        """The selected dataset's processed folder."""
        return self.paths["processed"] / self.dataset

    # changes ------------------------------------------------------------------------------------
    def observe(self, fn: Callable[[set[str]], None]) -> None:
        """Call ``fn(what changed)`` (a set of :data:`CHANGES`) after every change."""
        self._observers.append(fn)

    def changed(self, *what: str) -> None:
        unknown = set(what) - set(CHANGES)
        if unknown:
            raise ValueError(f"unknown change {sorted(unknown)}; one of {CHANGES}")
        for fn in list(self._observers):
            try:
                fn(set(what))
            except Exception:  # one view that fails must not stop the others
                log.exception("a tab failed to show the change %s", sorted(what))

    def select(self, dataset: str | None = None, run: Path | str | None = ...,  # type: ignore
               clip: str | None = None) -> None:
        """Change the selection; observers hear what differs."""
        what = []
        if dataset is not None and dataset != self.dataset:
            self.dataset, self.clip = dataset, ""
            what += ["dataset", "clip"]
        if run is not ...:
            run = Path(run) if run else None
            if run != self.run:
                self.run = run
                what.append("run")
        if clip is not None and clip != self.clip:
            self.clip = clip
            what.append("clip")
        if what:
            self.changed(*dict.fromkeys(what))

    # runs -------------------------------------------------------------------------------------------
    def runs(self, kind: str) -> list[Path]:
        """Run folders of ``kind``, newest first."""
        return self.lab.runs(kind)

    def newest(self, kind: str) -> Path | None:
        found = self.runs(kind)
        return found[0] if found else None

    def run_options(self, kind: str) -> list[tuple[str, str]]:
        """(label, run name) per run of ``kind``, newest first; the label gives its state."""
        return [(f"{p.name} · {run_state(p)}", p.name) for p in self.runs(kind)]

    def datasets(self) -> list[str]:
        """The data sources, then every other processed folder that has an index."""
        sources = list(SOURCES)
        folder = self.paths["processed"]
        others = sorted(p.parent.name for p in folder.glob("*/index.csv")) \
            if folder.is_dir() else []
        return sources + [d for d in others if d not in sources]

    # settings -------------------------------------------------------------------------------------
    def add_forms(self, *forms: ConfigForm) -> None:
        """Forms that edit a stage of the config: a preset loads into them, and
        :meth:`apply` writes those of a stage from any tab."""
        self._forms.extend(forms)

    def apply(self, panel: Any, *stages: str, forms: tuple[ConfigForm, ...] = ()) -> bool:
        """Write ``forms`` and every form of ``stages`` into the config; a bad value is shown in
        ``panel`` (a :class:`~app.jobs.JobPanel`) and returns False."""
        try:
            for form in (*forms, *(f for f in self._forms if f.stage in stages)):
                form.apply(self.cfg)
        except ValueError as exc:  # ConfigError is a ValueError
            panel.status.value = error_html(exc)
            return False
        return True

    def use_config(self, cfg: LabConfig, preset: str = "") -> None:
        """Take every stage of ``cfg`` but the environment (data root, seed, workers stay) and
        show it in the forms."""
        for stage in STAGES:
            setattr(self.cfg, stage, getattr(cfg, stage))
        for form in self._forms:
            if form.stage in STAGES:
                form.load(getattr(self.cfg, form.stage))
        self.preset = preset
        self.changed("config")

    def set_data_root(self, root: str) -> None:
        self.lab.set_data_root(root)
        runs = self.runs("train")
        self.run = runs[0] if runs else None
        self.changed("data_root", "dataset", "runs", "run")

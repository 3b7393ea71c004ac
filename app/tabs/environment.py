"""The Environment tab: the machine and its GPUs, the runtime settings, the data folder."""

from __future__ import annotations

import html

import ipywidgets as W

from dflab.core.environment import check_data_root, in_colab, mount_drive

from ..session import Session
from ..widgets import ConfigForm, error_html, icon, table_html
from .base import Tab


class EnvironmentTab(Tab):
    title = "Environment"

    def __init__(self, session: Session):
        super().__init__(session)
        self.info = W.HTML("")
        self.refresh_button = W.Button(description="Refresh", icon=icon("refresh"))
        self.form = ConfigForm(session.cfg.env, "env", ["seed", "deterministic", "workers"])
        self.seed = self.form.inputs["seed"]
        self.apply_button = W.Button(description="Apply runtime settings")
        self.runtime = W.HTML("")
        # applied only by the button: typing creates nothing (the folder is checked first)
        self.data_root = W.Text(value=str(session.paths["data_root"]), description="Data folder",
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
        self.refresh()

    def refresh(self) -> None:
        res = self.session.lab.environment()
        self.report = res.report
        self.info.value = table_html(res.rows())

    def apply(self) -> None:
        try:
            self.form.apply(self.session.cfg)
        except ValueError as exc:
            self.runtime.value = error_html(exc)
            return
        self.runtime.value = table_html(self.session.lab.runtime())

    def mount(self) -> None:
        root = mount_drive() / "dflab"
        self.data_root.value = str(root)
        self.use_root()

    def use_root(self) -> None:
        """Check the typed folder, then make it the data root (its sub-folders are created)."""
        try:
            root = check_data_root(self.data_root.value, self.session.paths["data_root"])
            self.session.set_data_root(str(root))
        except (ValueError, OSError) as exc:
            self.root_note.value = error_html(exc)
            return
        self.data_root.value = str(root)
        self.root_note.value = f"data root: <b>{html.escape(str(root))}</b>"

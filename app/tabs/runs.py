"""The Runs tab: every run with its state and test AUCs, curves and settings compared, the
robustness of a run, and the generalisation protocols."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import ipywidgets as W

from dflab.core.runs import RUN_COLUMNS, config_differences, plot_histories, plot_rocs, run_cells

from ..jobs import JobPanel
from ..session import Session
from ..widgets import error_html, icon, show_figure
from .base import Tab


STATE_COLOURS = {"running": "#1565c0", "done": "#2e7d32", "cancelled": "#ef6c00",
                 "failed": "#c62828", "killed": "#c62828", "incomplete": "#757575"}


def _state_html(state: str) -> str:
    return (f"<span style='color:{STATE_COLOURS.get(state, '#000')};font-weight:600'>"
            f"{html.escape(state)}</span>")


def runs_html(rows: list[dict[str, Any]]) -> str:
    """:func:`dflab.core.runs.runs_table` rows as an HTML table."""
    if not rows:
        return "<p>No runs yet: train a model (Train tab) or run `dflab demo`.</p>"

    def cell(column: str, text: str | list[str]) -> str:
        if column == "state":
            return _state_html(str(text))
        if isinstance(text, list):  # the AUCs, one model a line
            return "<br>".join(map(html.escape, text)) or "not evaluated"
        return html.escape(text)

    head = "".join(f"<th style='text-align:left;padding-right:1em'>{h}</th>" for h in RUN_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding-right:1em'>{cell(c, v)}</td>"
                         for c, v in zip(RUN_COLUMNS, run_cells(r))) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def differences_html(diff: dict[str, dict[str, Any]]) -> str:
    if not diff:
        return "<p>The selected runs have the same settings.</p>"
    runs = list(next(iter(diff.values())))
    head = "<th></th>" + "".join(f"<th style='padding-right:1em'>{html.escape(r)}</th>"
                                 for r in runs)
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   + "".join(f"<td style='padding-right:1em'>{html.escape(str(v.get(r)))}</td>"
                             for r in runs) + "</tr>" for k, v in diff.items())
    return f"<h4>Settings that differ</h4><table><tr>{head}</tr>{body}</table>"


class RunsTab(Tab):
    title = "Runs"

    def __init__(self, session: Session):
        super().__init__(session)
        self.refresh_button = W.Button(description="Refresh runs", icon=icon("refresh"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.table = W.HTML("")
        self.select = W.SelectMultiple(options=[], rows=8, description="compare",
                                       layout=W.Layout(width="70%"))
        self.select.observe(lambda _: self.compare(), "value")
        self.diff, self.plots = W.HTML(""), W.Output()
        # generalisation protocols: one train run per cell with the Train tab's settings
        self.protocol_kind = W.Dropdown(options=["cross-method", "leave-one-out",
                                                 "cross-dataset"], description="protocol")
        self.protocol_name = W.Text(value="", description="name",
                                    placeholder="(a timestamp); the same name resumes")
        self.test_on = W.Text(value="", description="test on",
                              placeholder="cross-dataset: processed folder(s), comma-separated")
        self.protocol_job = JobPanel("Run protocol", method="protocol")
        self.protocol_job.start.on_click(lambda _: self.run_protocol())
        self.protocol_job.on_done.append(lambda res: self.show_protocol(res))
        self.protocol_out = W.HTML("")
        # robustness of the (first) selected run
        self.robust_job = JobPanel("Robustness of the selected run", method="robustness")
        self.robust_job.start.on_click(lambda _: self.run_robustness())
        self.robust_job.on_done.append(lambda res: self.show_robustness(res))
        self.robust_out, self.robust_plot = W.HTML(""), W.Output()
        self.widget = W.VBox([
            self.refresh_button, self.table,
            W.HTML("<p>Select one or more runs (Ctrl/Shift-click) to overlay their curves.</p>"),
            self.select, self.diff, self.plots,
            W.HTML("<h3>Robustness</h3><p>AUC of the selected run's models (a fuse run: "
                   "visual, forensic and fused) on test crops under JPEG, blur, down-scaling "
                   "and noise.</p>"),
            self.robust_job.widget, self.robust_plot, self.robust_out,
            W.HTML("<h3>Generalisation protocols</h3><p>One training run per cell with the "
                   "Train tab's settings on the Data tab's folder; an interrupted protocol "
                   "resumes at its cell when started again with the same name.</p>"),
            W.HBox([self.protocol_kind, self.protocol_name]), self.test_on,
            self.protocol_job.widget, self.protocol_out])
        self.job_panels = [self.protocol_job, self.robust_job]
        self.refresh()

    def on_change(self, what: set[str]) -> None:
        if what & {"runs", "data_root"}:
            self.refresh()

    def refresh(self) -> None:
        rows = self.session.lab.runs_table()
        self.table.value = runs_html(rows)
        self.select.options = [(f"{r['run']} ({r['kind']}, {r['state']})", r["path"])
                               for r in rows]

    def compare(self) -> None:
        paths = [Path(p) for p in self.select.value]
        self.plots.outputs = ()
        self.diff.value = ""
        if not paths:
            return
        try:
            show_figure(self.plots, plot_histories(paths), False)
            show_figure(self.plots, plot_rocs(paths), False)
            for run in paths:
                self._extras(run)
            if len(paths) > 1:
                self.diff.value = differences_html(config_differences(paths))
        except Exception as exc:  # a damaged run folder must not break the tab
            self.diff.value = error_html(f"{type(exc).__name__}: {exc}")

    def _extras(self, run: Path) -> None:
        """A protocol's matrix; a run's robustness curves."""
        if (run / "protocol.json").is_file():
            from dflab.analysis.protocol import plot_protocol

            show_figure(self.plots, plot_protocol(json.loads((run / "protocol.json")
                                                             .read_text())), False)
        if (run / "robustness_test.json").is_file():
            from dflab.analysis.robustness import plot_robustness

            show_figure(self.plots, plot_robustness(json.loads((run / "robustness_test.json")
                                                               .read_text())), False)

    def run_protocol(self) -> None:
        s = self.session
        if not s.apply(self.protocol_job, "model", "train"):  # as the Train button would
            return
        tests = [t.strip() for t in self.test_on.value.split(",") if t.strip()]
        self.protocol_job.run_detached(s.lab, name=self.protocol_name.value.strip(),
                                       kind=self.protocol_kind.value,
                                       processed=str(s.processed), test_on=tests)

    def show_protocol(self, res: Any) -> None:
        from dflab.analysis.protocol import format_protocol

        self.protocol_out.value = (f"<pre>{html.escape(format_protocol(res.report))}</pre>"
                                   f"<p>{html.escape(str(res.path))}</p>")
        self.refresh()
        self.select.value = (str(res.path.parent),)

    def run_robustness(self) -> None:
        if not self.select.value:
            self.robust_job.status.value = error_html("select a run above first")
            return
        run = Path(self.select.value[0])
        self.robust_job.run_detached(self.session.lab, name=run.name, run=str(run))

    def show_robustness(self, res: Any) -> None:
        from dflab.analysis.robustness import format_robustness, plot_robustness

        show_figure(self.robust_plot, plot_robustness(list(res.rows)))
        self.robust_out.value = f"<pre>{html.escape(format_robustness(list(res.rows)))}</pre>"

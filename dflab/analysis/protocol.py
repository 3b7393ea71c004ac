"""Generalisation protocols: where a detector still works when the fakes are made another way.

- ``cross-method``: one model per manipulation method, trained on the real videos and that
  method's fakes, each tested on every method's test fakes (against all test reals): a
  methods x methods AUC matrix, the diagonal in-distribution (DeepfakeBench's central table).
- ``leave-one-out``: one model per method left out, trained on the others, tested on all; the
  held-out column is the one that matters.
- ``cross-dataset``: one model on one processed folder (e.g. FF++), tested on its own test split
  and on each other folder's (e.g. DFDC).

Every cell is an ordinary train run (``runs/train-<protocol>-<cell>``) that is then evaluated,
so an interrupted protocol resumes: finished cells are kept, a half-trained cell resumes from its
last checkpoint, and the report (``runs/protocol-<name>/protocol.json``) is rewritten after
every cell. Model selection reads the validation split of the training folder only.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.files import read_json, write_json
from dflab.core.runs import create_run_dir, report_tag

if TYPE_CHECKING:
    from dflab.lab import Lab

log = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "protocol_cells", "run_protocol", "format_protocol", "plot_protocol"]

PROTOCOLS = ("cross-method", "leave-one-out", "cross-dataset")


def protocol_cells(kind: str, methods: Sequence[str], tests: Sequence[str] = ()
                   ) -> list[dict[str, Any]]:
    """The cells of a protocol: ``cell`` (its name), ``train_methods`` (empty: all) and, for
    cross-dataset, the processed folders ``tests`` it is evaluated on besides its own."""
    if kind == "cross-method":
        return [{"cell": m, "train_methods": [m]} for m in methods]
    if kind == "leave-one-out":
        if len(methods) < 2:
            raise ValueError(f"leave-one-out needs two or more methods, the folder has "
                             f"{list(methods)}")
        return [{"cell": f"without-{m}", "held_out": m,
                 "train_methods": [o for o in methods if o != m]} for m in methods]
    if kind == "cross-dataset":
        if not tests:
            raise ValueError("cross-dataset needs the processed folder(s) to test on "
                             "(--test-on PROCESSED, e.g. data/processed/dfdc)")
        return [{"cell": "all", "train_methods": [], "tests": [str(t) for t in tests]}]
    raise ValueError(f"protocol '{kind}' is not one of {', '.join(PROTOCOLS)}")


def _fake_methods(processed: Path) -> list[str]:
    from dflab.data.datasets import load_index

    df = load_index(processed)
    return sorted(df.loc[(df["target"] == 1) & (df["split"] == "train"), "method"].unique())


def _cell_done(run: Path, folders: list[str]) -> bool:
    """Trained, and evaluated on the test split of every folder."""
    return (run / "train_summary.json").is_file() and all(
        (run / f"eval_{report_tag(run, f, 'test')}.json").is_file() for f in folders)


def _auc(block: dict[str, Any] | None) -> float | None:
    return None if block is None else block.get("auc")


def _cell_results(kind: str, cell: dict[str, Any], run: Path, processed: Path
                  ) -> dict[str, dict[str, float | None]]:
    """{level: {column: AUC}}: per test method (cross-method, leave-one-out) or per test folder
    (cross-dataset)."""
    out: dict[str, dict[str, Any]] = {"frame": {}, "video": {}, "frame_ci": {},
                                      "video_ci": {}}
    blocks: list[tuple[str, str, dict]] = []  # (level, column, metrics)
    if kind == "cross-dataset":
        for folder in [str(processed)] + cell["tests"]:
            rep = read_json(run / f"eval_{report_tag(run, folder, 'test')}.json")["visual"]
            blocks += [(level, Path(folder).name, rep[level]) for level in ("frame", "video")]
    else:
        rep = read_json(run / "eval_test.json")["visual"]
        blocks += [(level, m, block) for level in ("frame", "video")
                   for m, block in rep[f"{level}_per_method"].items()]
    for level, col, block in blocks:
        out[level][col] = _auc(block)
        out[f"{level}_ci"][col] = block.get("auc_ci")
    return out


def run_protocol(lab: "Lab", kind: str, name: str = "", processed: str | Path = "",
                 tests: Sequence[str | Path] = (), methods: Sequence[str] = (),
                 callbacks: list[Callback] | None = None,
                 cancel: CancelToken | None = None) -> dict[str, Any]:
    """Run (or resume) protocol ``kind`` with ``lab``'s settings; returns the report written to
    ``runs/protocol-<name>/protocol.json``: the cells with their runs and AUCs, and the matrix."""

    processed = lab.processed_dir(processed).resolve()
    name = name or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    methods = list(methods) or _fake_methods(processed)
    # the training folder's own test split is always scored; another folder is a test set
    tests = [str(Path(t).resolve()) for t in tests if Path(t).resolve() != processed]
    cells = protocol_cells(kind, methods, tests)
    folder = create_run_dir(lab.paths["runs"], "protocol", lab.cfg, name, processed=processed)
    report: dict[str, Any] = {"kind": kind, "name": name, "processed": str(processed),
                              "methods": methods, "cells": []}
    em = Emitter("protocol", callbacks, cancel)
    for k, cell in enumerate(cells):
        em.progress(k, len(cells), "cell", cell["cell"])
        em.check()
        run_name = f"{name}-{cell['cell']}"
        run = lab.paths["runs"] / f"train-{run_name}"
        if _cell_done(run, [str(processed), *cell.get("tests", [])]):
            log.info("protocol %s: cell %s is done (%s)", name, cell["cell"], run)
        else:
            cell_lab = lab.derive({"train.methods": cell["train_methods"]})
            if not (run / "train_summary.json").is_file():
                resume = (run / "checkpoints" / "last.pt").is_file()
                if resume:
                    log.info("protocol %s: resuming cell %s", name, cell["cell"])
                cell_lab.train(processed, run_name, resume=resume, callbacks=callbacks,
                               cancel=cancel)
            cell_lab.evaluate(run, processed, callbacks=callbacks, cancel=cancel)
            for t in cell.get("tests", []):
                cell_lab.evaluate(run, t, callbacks=callbacks, cancel=cancel)
        report["cells"].append({**cell, "run": str(run),
                                "auc": _cell_results(kind, cell, run, processed)})
        report["matrix"] = _matrix(report)
        write_json(folder / "protocol.json", report)
    em.progress(len(cells), len(cells), "cell", "done")
    em.result(protocol=kind, report=str(folder / "protocol.json"))
    return report


def _matrix(report: dict[str, Any]) -> dict[str, Any]:
    """Rows: cells (trained on); columns: tested on; one AUC table per level."""
    cols = list(dict.fromkeys(c for cell in report["cells"] for c in cell["auc"]["video"]))
    rows = [cell["cell"] for cell in report["cells"]]
    return {"rows": rows, "cols": cols, **{
        level: [[cell["auc"].get(level, {}).get(c) for c in cols] for cell in report["cells"]]
        for level in ("frame", "video", "frame_ci", "video_ci")}}


def format_protocol(report: dict[str, Any], level: str = "video") -> str:
    """The matrix as text: trained on (rows) x tested on (columns), ``level`` AUC."""
    m = report["matrix"]
    cis = m.get(f"{level}_ci") or [[None] * len(m["cols"]) for _ in m["rows"]]

    def cell(v, ci) -> str:
        if v is None:
            return "-"
        if ci and not any(math.isnan(x) for x in ci):
            return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
        return f"{v:.3f}"

    texts = [[cell(v, ci) for v, ci in zip(vals, cirow)] for vals, cirow in zip(m[level], cis)]
    width = max(12, *(len(c) for c in m["cols"]), *(len(t) for row in texts for t in row))
    first = max(14, *(len(r) for r in m["rows"]))
    lines = [f"{report['kind']}: {level} AUC [95% video-bootstrap interval], trained on (rows) "
             f"x tested on (columns)",
             f"{'':<{first}} " + " ".join(f"{c:>{width}}" for c in m["cols"])]
    for r, row in zip(m["rows"], texts):
        lines.append(f"{r:<{first}} " + " ".join(f"{t:>{width}}" for t in row))
    return "\n".join(lines)


def plot_protocol(report: dict[str, Any], level: str = "video"):
    """Plotly heatmap of the matrix (AUC 0.5-1, the values written in the cells)."""
    import plotly.graph_objects as go

    m = report["matrix"]
    z = [[None if v is None else round(v, 3) for v in row] for row in m[level]]
    fig = go.Figure(go.Heatmap(z=z, x=m["cols"], y=m["rows"], zmin=0.5, zmax=1.0,
                               colorscale="Viridis", text=z, texttemplate="%{text}",
                               colorbar={"title": "AUC"}))
    fig.update_layout(title=f"{report['kind']}: {level}-level AUC", xaxis_title="tested on",
                      yaxis_title="trained on", yaxis={"autorange": "reversed"}, height=380)
    return fig

"""Run folders: every run writes its resolved config, the environment report and library versions
next to its outputs, so no result depends on a hidden setting."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from dflab.core.config import LabConfig, save_config
from dflab.core.environment import environment_report
from dflab.core.files import read_json, read_jsonl, reading, write_json
from dflab.core.jobs import Job

log = logging.getLogger(__name__)

__all__ = ["library_versions", "create_run_dir", "RUN_KINDS",
           "run_info", "list_runs", "read_report", "write_report", "runs_table", "format_runs",
           "config_differences", "run_history", "plot_histories", "plot_rocs", "report_tag"]

#: What a run folder can hold, recorded in its ``run.json`` (never parsed from the folder name).
RUN_KINDS = ("train", "forensic", "fuse", "demo", "real", "protocol", "sync")

TRACKED = ["dflab", "torch", "torchvision", "timm", "numpy", "opencv-python", "ultralytics",
           "scikit-learn", "librosa", "onnx", "onnxruntime", "shap", "ipywidgets", "plotly"]


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def create_run_dir(runs_root: str | Path, kind: str, cfg: LabConfig, name: str = "",
                   env_report: dict | None = None, processed: str | Path = "") -> Path:
    """``<runs_root>/<kind>-<name or timestamp>`` with run.json (kind, name, creation time, the
    processed folder and the SHA-256 of its index.csv), config.yaml, environment.json, versions.json.

    An existing folder of that name is reused (resume); its config is rewritten.
    """
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind '{kind}' is not one of {list(RUN_KINDS)}")
    stamp = name or time.strftime("%Y%m%d-%H%M%S")
    run = Path(runs_root) / f"{kind}-{stamp}"
    run.mkdir(parents=True, exist_ok=True)
    info = run / "run.json"
    created = read_json(info)["created"] if info.exists() else time.time()
    index = Path(processed) / "index.csv" if processed else None
    write_json(info, {"kind": kind, "name": stamp, "created": created,
                      "processed": str(Path(processed).resolve()) if processed else "",
                      "index_sha256": _sha256(index) if index and index.is_file() else ""})
    save_config(cfg, run / "config.yaml")
    if env_report is None:
        env_report = environment_report(cfg.env.data_root)
    write_json(run / "environment.json", env_report)
    write_json(run / "versions.json", library_versions())
    return run


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_info(run: str | Path) -> dict[str, Any]:
    """A run folder's ``run.json``: kind, name, creation time (epoch seconds), processed folder."""
    run = Path(run)
    path = run / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"'{run}' is not a dflab run folder (no run.json)")
    redo = "run the stage that made the folder again"
    info = read_json(path, "run record", redo)
    with reading(path, "run record", redo):
        if not (isinstance(info, dict) and info.get("kind") in RUN_KINDS
                and isinstance(info.get("name", ""), str)
                and isinstance(info.get("processed", ""), str)):
            raise ValueError(f"kind {info.get('kind')!r} (one of {', '.join(RUN_KINDS)}), "
                             f"name and processed folder expected")
        return {**info, "created": float(info.get("created", 0.0))}


def report_tag(run: str | Path, folder: str | Path, split: str) -> str:
    """The name an evaluation of ``run`` on ``folder`` is written under (``eval_<tag>.json``):
    ``split`` for the folder the run was trained on, else ``<split>_<folder name>``, so scoring
    another folder never overwrites the run's own report."""
    own = str(Path(folder).resolve()) == run_info(run).get("processed", "")
    return split if own else f"{split}_{Path(folder).name}"


def list_runs(runs_root: str | Path, kind: str = "") -> list[Path]:
    """Run folders under ``runs_root`` (of one ``kind`` when given), newest first."""
    found = []
    for run in Path(runs_root).glob("*"):
        try:
            meta = run_info(run)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except ValueError as exc:  # a damaged run.json: the other runs are still listed
            log.warning("%s; the run is left out of the list", exc)
            continue
        if not kind or meta["kind"] == kind:
            found.append((meta["created"], run))
    return [p for _, p in sorted(found, key=lambda t: (t[0], t[1].name), reverse=True)]


def write_report(run: str | Path, split: str, reports: dict[str, dict]) -> Path:
    """``eval_<split>.json``: one schema for every evaluation, ``{model: report}`` (visual;
    mlp and logreg; visual, forensic and fused), each report from
    :func:`dflab.core.metrics.evaluate_predictions`."""
    return write_json(Path(run) / f"eval_{split}.json", reports)


def read_report(run: str | Path, split: str = "test") -> dict[str, dict]:
    path = Path(run) / f"eval_{split}.json"
    if not path.exists():
        raise FileNotFoundError(f"run '{run}' has no {split} evaluation ({path.name}); "
                                f"evaluate it first")

    redo = f"evaluate the run again (dflab evaluate --run {run} --split {split})"
    reports = read_json(path, "evaluation report", redo)
    with reading(path, "evaluation report", redo):
        for rep in reports.values():  # the fields every reader of a report takes
            for level in ("frame", "video"):
                if rep[level]["auc"] is not None:
                    float(rep[level]["auc"])
    return reports


# settings that say where things are, not how a model was made: left out of "what differs"
_WHERE = ("root", "path", "dir", "cluster", "server")


def _flat_config(run: Path) -> dict[str, Any]:
    import yaml

    path = run / "config.yaml"
    raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    return {f"{stage}.{k}": v for stage, sect in (raw or {}).items() if isinstance(sect, dict)
            for k, v in sect.items()}


def _differing(configs: list[dict[str, Any]]) -> list[str]:
    """The keys whose values differ between the flat configs (where-things-are keys left out)."""
    keys = sorted({key for c in configs for key in c})
    return [key for key in keys if not any(w in key.split(".")[-1] for w in _WHERE)
            and len({json.dumps(c.get(key), default=str) for c in configs}) > 1]


def config_differences(runs: list[str | Path]) -> dict[str, dict[str, Any]]:
    """``{key: {run name: value}}`` for the settings in which ``runs`` differ."""
    runs = [Path(r) for r in runs]
    configs = [_flat_config(r) for r in runs]
    return {key: {r.name: c.get(key) for r, c in zip(runs, configs)}
            for key in _differing(configs)}


def run_history(run: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's history.jsonl (one per epoch), or []."""
    path = Path(run) / "history.jsonl"
    if not path.exists():
        return []
    redo = "delete it (the curves are drawn again from the next training)"
    rows = read_jsonl(path, "training history", redo)
    with reading(path, "training history", redo):
        for row in rows:
            int(row["epoch"])
            for key in ("train_loss", "val_loss"):
                if row.get(key) is not None:
                    float(row[key])
    return rows


def plot_histories(runs: list[str | Path]):
    """Plotly figure: train and validation loss per epoch of each run (one colour per run,
    dashed = validation)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    for k, run in enumerate(Path(r) for r in runs):
        colour = qualitative.Plotly[k % len(qualitative.Plotly)]
        hist = run_history(run)
        for key, dash in (("train_loss", "solid"), ("val_loss", "dash")):
            pts = [(h["epoch"], h[key]) for h in hist if h.get(key) is not None]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts],
                                         mode="lines+markers", name=f"{run.name} {key}",
                                         line={"color": colour, "dash": dash}))
    fig.update_layout(title="Loss curves", xaxis_title="epoch", yaxis_title="loss", height=360)
    return fig


def plot_rocs(runs: list[str | Path], level: str = "video"):
    """Plotly figure: the test ROC curve of every model of each run (from eval_test.json)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for run in (Path(r) for r in runs):
        try:
            reports = read_report(run, "test")
        except FileNotFoundError:
            continue
        for model, rep in reports.items():
            roc = rep.get(f"roc_{level}")
            if roc:
                fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines",
                                         name=f"{run.name} {model} "
                                              f"(AUC {rep[level]['auc']:.3f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dot", "color": "#999"}))
    fig.update_layout(title=f"Test ROC ({level} level)", xaxis_title="false positive rate",
                      yaxis_title="true positive rate", height=360)
    return fig


# what marks a run of each kind as finished, for runs not started as detached jobs
_DONE_MARKERS = {"train": "train_summary.json", "forensic": "eval_test.json",
                 "fuse": "eval_test.json", "demo": "demo_report.json",
                 "sync": "sync_summary.json", "protocol": "protocol.json"}


def run_state(run: str | Path) -> str:
    """``running``, ``done``, ``cancelled``, ``failed`` or ``killed`` for a run started as a
    detached job (its ``status.json``, see :mod:`dflab.core.jobs`); otherwise ``done`` when the run's
    final file exists, else ``incomplete`` (stopped, or still running in another process)."""
    run = Path(run)
    if (run / "job.json").exists():
        state = Job(run).state
        return "running" if state == "starting" else state
    try:
        kind = run_info(run)["kind"]
    except FileNotFoundError:
        return "incomplete"
    marker = _DONE_MARKERS.get(kind)
    return "done" if marker is None or (run / marker).exists() else "incomplete"


def _best_val_loss(run: Path) -> float | None:
    summary = run / "train_summary.json"
    if summary.exists():
        best = read_json(summary, "training summary", "train the run again to write it")
        return best.get("best_val_loss") if isinstance(best, dict) else None
    losses = [h.get("val_loss") for h in run_history(run)]
    losses = [v for v in losses if v is not None]
    return min(losses) if losses else None


def runs_table(runs_root: str | Path, kind: str = "") -> list[dict[str, Any]]:
    """One row per run under ``runs_root`` (of ``kind`` when given), newest first: name, kind,
    creation time, backbone, best validation loss, test AUCs per model (frame and video, from
    ``eval_test.json``), and the settings in which the listed runs differ (paths left out)."""
    rows, configs = [], []
    for run in list_runs(runs_root, kind):
        info = run_info(run)  # list_runs left out the runs whose run.json is damaged
        cfg = _flat_config(run)
        configs.append(cfg)
        k = info["kind"]
        backbone = (cfg.get("model.backbone", "") if k in ("train", "demo") else
                    f"mlp {cfg.get('features.hidden', '')}" if k == "forensic" else
                    "logistic stacker" if k == "fuse" else "")
        row: dict[str, Any] = {
            "run": run.name, "kind": k, "path": str(run),
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(info["created"])),
            "backbone": backbone, "best_val_loss": _best_val_loss(run), "test_auc": {},
            "state": run_state(run)}
        try:
            reports = read_report(run, "test")
        except FileNotFoundError:
            reports = {}
        except ValueError as exc:  # a damaged report: the run is listed without its AUCs
            log.warning("%s", exc)
            reports = {}
        if k == "demo" and (run / "demo_report.json").exists():
            test = read_json(run / "demo_report.json").get("test", {})
            reports = {m: r for m, r in test.items() if isinstance(r, dict) and "video" in r}
        for model, rep in reports.items():
            row["test_auc"][model] = {"frame": rep["frame"]["auc"], "video": rep["video"]["auc"],
                                      "video_ci": rep["video"].get("auc_ci")}
        rows.append(row)
    differ = _differing(configs)
    for row, cfg in zip(rows, configs):
        row["differs"] = {key: cfg.get(key) for key in differ}
    return rows


#: the columns of a runs table, as the CLI prints it and the dashboard shows it
RUN_COLUMNS = ("run", "kind", "state", "created", "backbone", "best val loss",
               "test AUC frame / video")


def run_cells(row: dict[str, Any]) -> list[str | list[str]]:
    """One :func:`runs_table` row as the text of each of :data:`RUN_COLUMNS`; the last cell is a
    list, one AUC pair per model (empty: not evaluated)."""
    loss = row["best_val_loss"]
    return [row["run"], row["kind"], row.get("state", ""), row["created"], str(row["backbone"]),
            "" if loss is None else f"{loss:.4f}",
            [f"{m} {a['frame']:.3f}/{a['video']:.3f}" for m, a in row["test_auc"].items()]]


def format_runs(rows: list[dict[str, Any]]) -> str:
    """:func:`runs_table` as a text table (one run per line, then what differs per run)."""
    if not rows:
        return "no runs yet"
    body = [[*cells[:-1], ", ".join(cells[-1]) or "not evaluated"]
            for cells in map(run_cells, rows)]
    head = list(RUN_COLUMNS)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [head, *body]]
    differs = [f"  {r['run']}: " + ", ".join(f"{k}={v}" for k, v in r["differs"].items())
               for r in rows if r["differs"]]
    if differs:
        lines += ["settings that differ between these runs:", *differs]
    return "\n".join(lines)

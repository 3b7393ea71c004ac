"""What each :class:`dflab.Lab` stage returns: small frozen dataclasses whose ``str()`` is what
the CLI prints and whose fields the dashboard shows. The files they name hold the details."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dflab.core.metrics import format_auc

__all__ = ["EnvironmentResult", "DemoDataResult", "DownloadResult", "PreprocessResult",
           "TrainResult", "EvalResult", "ExportResult", "PredictResult", "BatchPredictResult",
           "FeaturesResult", "ExplainResult", "RobustnessResult", "ProtocolResult", "RefineResult",
           "WeightsResult", "DemoResult", "SyncExtractResult", "SyncTrainResult", "SyncScoreResult",
           "format_report"]


def _rows(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass(frozen=True)
class EnvironmentResult:
    report: dict[str, Any]

    def rows(self) -> list[tuple[str, Any]]:
        """(name, value) pairs for a table: machine, torch, GPUs, batch/AMP advice."""
        rep, t = self.report, self.report["torch"]
        rows: list[tuple[str, Any]] = [
            ("Python", rep["python"]), ("Platform", rep["platform"]),
            ("CPU cores", rep["cpu_cores"]),
            ("RAM free / total", f"{rep['ram_available_gb']} / {rep['ram_total_gb']} GiB"),
            ("Data root", rep["data_root"]), ("Disk free at data root", f"{rep['disk_free_gb']} GiB"),
            ("Colab", rep["colab"]), ("torch", t["version"]),
            ("CUDA / cuDNN", f"{t['cuda_version'] or '-'} / {t['cudnn_version'] or '-'}"),
            ("CUDA available", t["cuda_available"])]
        for g in rep["nvidia_smi"]:
            rows.append((f"GPU {g['index']}", f"{g['name']}, {g['memory_free_mib']}/"
                         f"{g['memory_total_mib']} MiB free, driver {g['driver']}, "
                         f"cc {g['capability'] or '?'}"))
        if not rep["nvidia_smi"]:
            rows.append(("GPU", rep["nvidia_smi_note"] or "none"))
        a, f = rep["advice"], rep["advice_for"]
        rows += [("Advice for", f"{f['backbone']} at {f['input_size']} px, effective batch "
                                f"{f['target_batch']}"),
                 ("Batch size", a["batch_size"]), ("Gradient accumulation", a["accumulation"]),
                 ("AMP", a["amp"]), ("Why", a["reason"])]
        return rows

    def __str__(self) -> str:
        return _rows(self.rows())


@dataclass(frozen=True)
class DemoDataResult:
    labels: Path  # labels.csv: path, label, method, split, ... per clip
    clips: int

    def __str__(self) -> str:
        return f"wrote {self.clips} clips and {self.labels}"


@dataclass(frozen=True)
class DownloadResult:
    dataset: str  # ffpp or dfdc
    root: Path  # where the files are
    fetched: int  # files (FF++) or parts (DFDC) fetched by this call
    already_done: int  # found complete from an earlier call
    failed: dict[str, str]  # file -> reason, after the retries
    bytes: int  # downloaded by this call (DFDC: the peak raw size on disk)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [f"{self.fetched} fetched, {self.already_done} already there, {len(self.failed)} "
                 f"failed, {self.bytes / 2**20:.1f} MiB -> {self.root}"]
        lines += [f"  failed {path}: {err}" for path, err in self.failed.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class PreprocessResult:
    out: Path
    source: str
    videos: int
    processed: int
    skipped: int
    failed: int
    frames: int
    coverage: float
    detector: str
    errors: dict[str, str] = field(default_factory=dict)  # video -> why it failed
    stats: dict[str, Any] = field(default_factory=dict)
    missing_on_disk: int = 0
    truncated: dict[str, str] = field(default_factory=dict)  # video -> where decoding stopped

    @property
    def index(self) -> Path:
        return self.out / "index.csv"

    def _landmark_line(self) -> str:
        lm = self.stats.get("landmark_coverage") or {}
        if not lm.get("frames_with_face"):
            return ""
        models = ", ".join(f"{m} {n}" for m, n in lm.get("models", {}).items()) or "off"
        return f", landmarks on {lm['coverage']:.1%} of faces ({models})"

    def __str__(self) -> str:
        lines = [f"{self.videos} videos from {self.source}"
                 + (f" ({self.missing_on_disk} listed but missing on disk)"
                    if self.missing_on_disk else "")
                 + f"; detector {self.detector}",
                 f"processed {self.processed}, skipped (already done) {self.skipped}, failed "
                 f"{self.failed}; {self.frames} frames, face coverage {self.coverage:.1%}"
                 + self._landmark_line()]
        lines += [f"  error {uid}: {err}" for uid, err in self.errors.items()]
        lines += [f"  warning {uid}: {msg}" for uid, msg in self.truncated.items()]
        lines.append(f"index: {self.index}; stats: {self.out / 'stats.json'} "
                     f"({self.stats.get('videos', 0)} videos, {self.stats.get('frames', 0)} "
                     f"frames)")
        return "\n".join(lines)


@dataclass(frozen=True)
class TrainResult:
    run: Path  # the run folder: checkpoints/, history.jsonl, train_summary.json
    best_epoch: int  # chosen on validation (train.select_on; the test split is never read)
    best_val_loss: float  # plain cross-entropy on val, comparable across loss settings
    last_epoch: int  # < train.epochs when early stopping ended the run
    stopped_early: bool
    seconds: float  # wall time of this call (a resumed run: since the resume)

    def __str__(self) -> str:
        return (f"run: {self.run} (best epoch {self.best_epoch} of {self.last_epoch}, val loss "
                f"{self.best_val_loss:.4f}{', stopped early' if self.stopped_early else ''}, "
                f"{self.seconds:.0f} s)")


def format_report(rep: dict, indent: str = "  ") -> str:
    """Frame and video metrics of one model's evaluation report, each AUC with its 95%
    interval, the counts it rests on, and the per-method video metrics."""
    f, v = rep["frame"], rep["video"]
    lines = [f"{indent}frame: n={f['n']} frames of {f.get('n_videos', '?')} videos "
             f"acc={f['accuracy']:.3f} auc={format_auc(f)} f1={f['f1']:.3f} ece={f['ece']:.3f}",
             f"{indent}video: n={v['n']} acc={v['accuracy']:.3f} auc={format_auc(v)} "
             f"f1={v['f1']:.3f}"]
    for level, m in (("frame", f), ("video", v)):
        ops = m.get("operating_points", {})
        if ops:
            lines.append(f"{indent}{level}: TPR at FPR " + "; ".join(
                f"<= {float(k[4:]):.0%}: {op['tpr']:.3f} (FPR {op['fpr']:.3f} at p >= "
                f"{op['threshold']:.3f})" for k, op in ops.items()))
    lines += [f"{indent}video {m:<16} n={mm['n']} acc={mm['accuracy']:.3f} auc={format_auc(mm)}"
              for m, mm in rep["video_per_method"].items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class EvalResult:
    """An evaluation in the one report schema: ``reports`` maps each model (visual; mlp and
    logreg; visual, forensic and fused) to its report, as in the run's ``eval_<split>.json``."""

    run: Path
    split: str
    reports: dict[str, dict]
    extra: str = ""

    def __getitem__(self, model: str) -> dict:
        return self.reports[model]

    def __str__(self) -> str:
        lines = []
        for model, rep in self.reports.items():
            lines.append(f"{model} ({self.split}, threshold {rep['threshold']:.3f} "
                         f"{rep.get('threshold_source', 'tuned on val')}):")
            lines.append(format_report(rep))
        if self.extra:
            lines.append(self.extra)
        if self.reports:
            lines.append(f"report: {self.run / f'eval_{self.split}.json'}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ExportResult:
    onnx: Path  # the model, with input size, mean, std, threshold and preprocessing in metadata
    bytes: int
    opset: int
    max_abs_diff: float  # largest |onnxruntime - torch| over the check batch, in logits
    parity_tol: float  # export.parity_tol: above it the export is marked failed
    parity_ok: bool
    int8: dict[str, Any] | None = None  # export_int8's report (--int8)

    def __str__(self) -> str:
        text = (f"{self.onnx} ({self.bytes / 2**20:.1f} MiB), opset {self.opset}, onnxruntime vs "
                f"torch max abs diff {self.max_abs_diff:.2e} (tolerance {self.parity_tol:.0e})")
        q = self.int8
        if q:
            text += f"\nint8: {q['onnx']} ({q['bytes'] / 2**20:.1f} MiB)"
            if "frame_auc_float" in q:
                text += (f"; test frame AUC float {q['frame_auc_float']:.4f}, int8 "
                         f"{q['frame_auc_int8']:.4f} (n={q['test_frames']} frames); largest "
                         f"|p(fake) difference| {q['max_abs_prob_diff']:.3f}")
        return text


@dataclass(frozen=True)
class PredictResult:
    """The verdict for one file; ``data`` is the full result (per-frame rows included)."""

    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def verdict(self) -> str:
        return self.data["verdict"]

    @property
    def probability(self) -> float | None:
        return self.data["probability"]

    def __str__(self) -> str:
        res = self.data
        prob = "-" if res["probability"] is None else f"{res['probability']:.3f}"
        lines = [f"{res['file']}: {res['verdict'].upper()} (p(fake)={prob}, threshold "
                 f"{res['threshold']:.3f}, {res['backend']}, {len(res['frames'])} frames with a "
                 f"face of {res['frames_sampled']} sampled)"]
        if res.get("truncated"):
            lines.append(f"  warning: {res['truncated']}")
        if len(res.get("probabilities") or {}) > 1:
            lines.append("  p(fake) per model: " + ", ".join(
                f"{m} {p:.3f}" for m, p in res["probabilities"].items())
                + ("" if res.get("has_audio", True) else " (no audio track)"))
        if "sync" in res:
            sy = res["sync"]
            lines.append("  sync: no audio track or no mouth window (fused without it)" if sy is None
                         else f"  sync: audio offset {sy['offset_frames']:+.0f} frames "
                         f"({sy['offset_ms']:+.0f} ms; + = sound early), confidence "
                         f"{sy['confidence']:.3f}, sync score {sy['sync_score']:+.3f} (higher: "
                         f"more out of sync; baseline offset {sy['baseline_offset_frames']:+.0f}, "
                         f"{sy['windows']} windows)")
        for r in res["frames"]:
            extra = "".join(f" {k[5:]}={v:.3f}" for k, v in r.items()
                            if k.startswith("prob_") and k != "prob_fused")
            lines.append(f"  frame {r['frame_index']:>6} t={r['timestamp']:>7.2f}s "
                         f"p(fake)={r['prob']:.3f}{extra}")
        return "\n".join(lines)


@dataclass(frozen=True)
class BatchPredictResult:
    """Verdicts for a batch of inputs scored with one model load."""

    results: tuple[PredictResult, ...]
    model: dict[str, Any]  # the bundle: models, backend, detector, threshold, overrides
    report: tuple[Path, ...]  # the files written (--report)
    seconds: float  # the whole batch, model load included

    def __len__(self) -> int:
        return len(self.results)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.verdict == "error")

    def __str__(self) -> str:
        m = self.model
        head = [f"model {m['model']} ({', '.join(m['models'])}; {m['backend']}; verdict from "
                f"{m['verdict_from']}, threshold {m['threshold']:.3f}; detector {m['detector']}"
                + (f" {m['detector_weights']}" if m["detector_weights"] else "") + ")"]
        if m["overridden"]:
            head.append("preprocessing overridden: " + ", ".join(
                f"{k} {a!r} -> {b!r}" for k, (a, b) in m["overridden"].items()))
        if len(self.results) == 1 and self.results[0].verdict != "error":
            body = [str(self.results[0])]
        else:
            body = []
            for r in self.results:
                d = r.data
                if r.verdict == "error":
                    body.append(f"ERROR {d['file']}: {d['error']}")
                    continue
                prob = "-" if r.probability is None else f"{r.probability:.3f}"
                per = " ".join(f"{k}={v:.3f}" for k, v in (d.get("probabilities") or {}).items())
                if d.get("sync"):
                    per += (f" sync offset={d['sync']['offset_frames']:+.0f} frames"
                            f" score={d['sync']['sync_score']:+.3f}")
                body.append(f"{r.verdict.upper():<13} p={prob} {per} frames "
                            f"{len(d['frames'])}/{d['frames_sampled']}  {d['file']}")
            counts = {v: sum(1 for r in self.results if r.verdict == v)
                      for v in ("fake", "real", "no face found", "error")}
            body.append(f"{len(self.results)} inputs: " + ", ".join(
                f"{n} {v}" for v, n in counts.items() if n) + f"; {self.seconds:.1f} s "
                f"({self.seconds / max(len(self.results), 1):.2f} s per input, model load "
                f"included)")
        if self.report:
            body.append("report: " + ", ".join(str(p) for p in self.report))
        return "\n".join(head + body)


@dataclass(frozen=True)
class FeaturesResult:
    path: Path  # features.csv: one row per crop, one column per feature
    names: tuple[str, ...]  # the feature columns, in order (`dflab features -v` explains each)

    def __str__(self) -> str:
        return f"{len(self.names)} features per crop -> {self.path}"


@dataclass(frozen=True)
class ExplainResult:
    out: Path  # the folder of overlays
    method: str  # gradcam or gradcam++
    rows: tuple[dict[str, Any], ...]  # file, frame_index, prob (p(fake)), overlay

    def __str__(self) -> str:
        lines = [f"{self.method}: {len(self.rows)} overlays (crop | heatmap of the fake logit) "
                 f"-> {self.out}"]
        lines += [f"  {Path(r['overlay']).name:<28} p(fake) {r['prob']:.3f}" for r in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class RobustnessResult:
    run: Path
    rows: tuple[dict[str, Any], ...]  # model, perturbation, strength, frame/video AUC
    report: Path  # robustness_<split>.json
    table: str  # dflab.analysis.robustness.format_robustness of the rows

    def __str__(self) -> str:
        return (f"{self.table}\n({self.rows[0]['videos']} videos, "
                f"{self.rows[0]['frames']} crops; frame AUC with its 95% video-bootstrap "
                f"interval) -> {self.report}")


@dataclass(frozen=True)
class ProtocolResult:
    report: dict[str, Any]  # kind, name, processed, methods, cells (run, AUCs), matrix
    path: Path  # runs/protocol-<name>/protocol.json
    table: str  # dflab.analysis.protocol.format_protocol at video and frame level

    def __str__(self) -> str:
        return f"{self.table}\n-> {self.path}"


@dataclass(frozen=True)
class RefineResult:
    path: Path  # <run>/refine.json: costs, every candidate, the front, the chosen point
    subset: Path  # <data_root>/feature_sets/<name>.json
    report: dict[str, Any]
    table: str  # dflab.forensic.refine.format_refine of the report

    def __str__(self) -> str:
        name = self.subset.stem
        return (f"{self.table}\n-> {self.path}\nsubset '{name}' -> "
                f"{self.subset}\nuse it: dflab train-forensic --set features.subset={name}")


@dataclass(frozen=True)
class WeightsResult:
    backbone: str  # timm name, or "yolo" for a face detector
    path: Path  # the weights file
    message: str  # what was done and how to use the file

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class DemoResult:
    report: dict[str, Any]  # dflab.workflows.demo's (the demo set) or dflab.workflows.real's (real data)
    text: str  # the report as the few lines a person reads (that module's format_*_report)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SyncExtractResult:
    processed: Path
    report: dict[str, Any]  # dflab.data.sync_windows.extract_sync's counts and reasons

    def __str__(self) -> str:
        r = self.report
        text = (f"sync windows in {self.processed}: {r['written']} videos written, {r['kept']} "
                f"already current, {r['no_audio']} without audio or face, "
                f"{r['missing_source']} whose source video is gone, {r['failed']} failed "
                f"(of {r['videos']})")
        for uid, why in list(r["reasons"].items())[:10]:
            text += f"\n  {uid}: {why}"
        return text


@dataclass(frozen=True)
class SyncTrainResult:
    run: Path
    summary: dict[str, Any]  # sync_summary.json

    def __str__(self) -> str:
        s = self.summary
        return (f"sync model: {self.run} (best epoch {s['best_epoch']} of {s['epochs']}, val "
                f"loss {s['best_val_loss']:.3f}; {s['train_windows']} windows of "
                f"{s['train_clips']} real train clips)\nscore it: dflab sync score --run "
                f"{self.run}")


@dataclass(frozen=True)
class SyncScoreResult:
    run: Path
    report: dict[str, Any]  # dflab.av.sync.score_sync's report
    text: str  # dflab.av.sync.format_sync_report of the report

    def __str__(self) -> str:
        return (self.text
                + f"\nper clip: {self.run / ('sync_clips_' + self.report['split'] + '.csv')}")

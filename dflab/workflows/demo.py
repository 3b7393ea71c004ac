"""The whole pipeline headless on the demo set (``dflab demo`` / ``make demo``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dflab.core.events import Callback, CancelToken, StageClock
from dflab.core.files import read_json, write_json
from dflab.core.metrics import format_auc
from dflab.core.runs import create_run_dir
from dflab.data.synthetic import leak_check

if TYPE_CHECKING:  # pragma: no cover
    from dflab.lab import Lab

__all__ = ["run_demo", "format_demo_report"]


def _auc_block(report: dict) -> dict[str, Any]:
    keep = ("auc", "auc_ci", "n_videos", "n_frames", "n_real", "n_fake", "accuracy",
            "balanced_accuracy", "operating_points")
    return {"threshold": report["threshold"],
            "frame": {k: report["frame"][k] for k in keep if k in report["frame"]},
            "video": {k: report["video"][k] for k in keep if k in report["video"]},
            "video_auc_per_method": {m: v["auc"] for m, v in report["video_per_method"].items()},
            "frame_auc_per_method": {m: v["auc"] for m, v in report["frame_per_method"].items()}}


def run_demo(lab: "Lab", name: str = "", callbacks: list[Callback] | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """Demo set, leak check, preprocessing, training, evaluation, forensic features and MLP,
    the fused verdict, the talking set with the sync model and the fused verdict with it, ONNX
    export and a prediction on a held-out clip, each a ``lab`` stage;
    returns the report (also written to ``<runs>/demo-<name>/demo_report.json``)."""
    # Long on purpose: the stages in the order they run, each a Lab call and a timing lap, read top
    # to bottom like the report it builds.

    import pandas as pd

    cfg = lab.cfg
    cb = {"callbacks": callbacks, "cancel": cancel}
    clock = StageClock()
    name = name or time.strftime("%Y%m%d-%H%M%S")
    runtime = lab.runtime()
    env = lab.environment().report
    labels = lab.demo_data(**cb).labels
    demo_dir = labels.parent
    clock.lap("demo set")
    leak = leak_check(labels)
    clock.lap("leak check")
    df = pd.read_csv(labels, dtype=str)
    pre = lab.preprocess("demo", demo_dir, **cb)
    stats = pre.stats
    clock.lap("preprocess")
    run = lab.train(pre.out, f"demo-{name}", **cb).run
    clock.lap("train")
    visual = lab.evaluate(run, **cb)["visual"]
    clock.lap("evaluate")
    lab.features(pre.out, **cb)
    clock.lap("forensic features")
    frun = lab.train_forensic(pre.out, f"demo-{name}", **cb)
    forensic = frun["mlp"]
    clock.lap("forensic MLP")
    fused = lab.fuse(run, frun.run, name=f"demo-{name}", **cb)
    fuse_run = fused.run
    clock.lap("fuse")
    # the audio-visual part: the talking set with its sync windows, the sync model (trained on
    # its real clips only), and the fused verdict with the sync input on that set, from the
    # visual and forensic models trained above
    av = lab.talking_set(**cb)
    av_labels = lab.paths["data_root"] / "demo_av" / "labels.csv"
    av_lab = lab.talking_lab()
    clock.lap("talking set")
    srun = av_lab.sync_train(av.out, f"demo-{name}", **cb).run
    sync = av_lab.sync_score(srun, av.out, "test", av_labels.parent / "shifts.json", **cb).report
    clock.lap("sync model")
    lab.features(av.out, **cb)
    fused_av = lab.fuse(run, frun.run, av.out, f"demo-av-{name}", sync=srun, **cb)
    clock.lap("fuse with sync")
    ex = lab.export(run)
    clock.lap("export")
    test = df[df["split"] == "test"]
    held_out = test[test["label"] == "fake"]["path"].iloc[-1]
    pred = lab.predict(demo_dir / held_out, fuse_run).data
    clock.lap("predict")
    history = (run / "history.jsonl").read_text().splitlines()
    best = read_json(run / "train_summary.json")
    report = {
        "config": {"backbone": cfg.model.backbone, "input_size": cfg.model.input_size,
                   "pretrained": cfg.model.pretrained, "epochs": cfg.train.epochs,
                   "every_nth": cfg.preprocess.every_nth},
        "runtime": runtime,
        "gpu": env["gpu"],
        "cpu_cores": env["cpu_cores"],
        "demo_set": {"path": str(demo_dir), "clips": len(df),
                     "per_method": df["method"].value_counts().to_dict(),
                     "per_split": df["split"].value_counts().to_dict(),
                     "leak_check_auc": leak},
        "preprocess": {"processed": pre.processed, "skipped_finished": pre.skipped,
                       "failed": pre.failed, "frames": pre.frames, "coverage": pre.coverage,
                       "index": str(pre.index), "detector": pre.detector},
        "stats": {k: stats[k] for k in ("videos", "frames", "face_coverage", "label_frames",
                                        "videos_with_audio")},
        "runs": {"visual": str(run), "forensic": str(frun.run), "fuse": str(fuse_run),
                 "sync": str(srun), "fuse_av": str(fused_av.run)},
        "train": {"best_epoch": best["best_epoch"], "last_epoch": best["last_epoch"],
                  "epochs": len(history)},
        "test": {"visual": _auc_block(visual), "forensic": _auc_block(forensic),
                 "fused": _auc_block(fused["fused"])},
        "sync": {"clips": sync["clips"], "windows": sync["windows"], "methods": sync["methods"],
                 "offsets": {m: {k: v for k, v in o.items() if k != "per_clip"}
                             for m, o in sync.get("offsets", {}).items()},
                 "talking_set": {"clips": av.videos, "path": str(av_labels.parent)}},
        "test_av": {m: _auc_block(fused_av[m]) for m in fused_av.reports},
        "export": {"onnx": str(ex.onnx), "max_abs_diff": ex.max_abs_diff},
        "predict": {"file": held_out, "verdict": pred["verdict"],
                    "probabilities": pred.get("probabilities")},
        "seconds_per_stage": clock.stages,
        "seconds": clock.total,
        "note": "the demo set is a demo, not a benchmark: it shows that the lab learns; it makes "
                "no claim about real deepfakes",
    }
    out = create_run_dir(lab.paths["runs"], "demo", cfg, name, env)
    write_json(out / "demo_report.json", report)
    report["report_path"] = str(out / "demo_report.json")
    return report


def format_demo_report(r: dict[str, Any]) -> str:
    """The demo report as the few lines a person reads."""
    ds, t = r["demo_set"], r["test"]
    tv = t["visual"]["video"]
    lines = [
        f"demo set: {ds['clips']} clips ({ds['per_split']}); leak check, label from file size, "
        f"frame count/size, fps and colour grade, out-of-fold AUC: "
        + ", ".join(f"{k} {v:.2f}" for k, v in ds["leak_check_auc"].items()),
        f"preprocess: {r['preprocess']['frames']} frames, face coverage "
        f"{r['preprocess']['coverage']:.1%}",
        f"visual model: {r['config']['backbone']} @ {r['config']['input_size']} px from scratch, "
        f"best epoch {r['train']['best_epoch']} of {r['train']['epochs']} (chosen on val)",
        f"test split: {tv['n_videos']} videos, {tv['n_frames']} frames; ROC-AUC with its 95% "
        f"bootstrap interval (videos resampled):",
        f"  {'model':<9} {'frame AUC':<24} {'video AUC':<24}",
    ]
    for m in ("visual", "forensic", "fused"):
        lines.append(f"  {m:<9} {format_auc(t[m]['frame']):<24} {format_auc(t[m]['video']):<24}")
    lines.append("  video AUC per method (visual / forensic / fused): " + "; ".join(
        f"{meth} {t['visual']['video_auc_per_method'][meth]:.2f}/"
        f"{t['forensic']['video_auc_per_method'][meth]:.2f}/"
        f"{t['fused']['video_auc_per_method'][meth]:.2f}"
        for meth in t["visual"]["video_auc_per_method"]))
    sy = r["sync"]
    lines.append(f"sync model on the talking set's test split ({sy['clips']} clips, "
                 f"{sy['windows']} windows; AUC of fake against real windows):")
    for method, by_model in sy["methods"].items():
        lines.append(f"  {method:<11} " + "; ".join(
            f"{m} {format_auc(lv['window'])} (n {lv['window']['n_real']}+"
            f"{lv['window']['n_fake']} windows)" for m, lv in by_model.items()))
    for m, o in sy["offsets"].items():
        lines.append(f"  offsets, {m}: median error {o['median_abs_error_frames']:.1f} frames, "
                     f"within one frame for {o['within_1_frame']:.0%} of {o['n']} clips")
    tav = r["test_av"]
    lines.append("talking set, video AUC: " + "; ".join(
        f"{m} {format_auc(tav[m]['video'])}" for m in tav) + " (fused: with the sync input)")
    p = r["predict"]
    probs = p["probabilities"] or {}
    lines.append(f"predict {p['file']}: {p['verdict'].upper()} ("
                 + ", ".join(f"{k} {v:.3f}" for k, v in probs.items()) + ")")
    lines.append(f"onnx: {r['export']['onnx']} (max |onnxruntime - torch| "
                 f"{r['export']['max_abs_diff']:.1e})")
    lines.append("seconds per stage: " + ", ".join(f"{k} {v}" for k, v in
                                                    r["seconds_per_stage"].items()))
    lines.append(f"wall time: {r['seconds']:.0f} s on {r['cpu_cores']} CPU cores"
                 f"{' + GPU' if r['gpu'] else ''}; report: {r['report_path']}")
    return "\n".join(lines)

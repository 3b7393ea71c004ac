"""``dflab`` command line: a thin parser over the same functions the dashboard calls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from . import config as C

log = logging.getLogger("dflab")

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str):
    """Register a subcommand: the decorated function gets (args, cfg)."""

    def deco(fn):
        def add_args(p: argparse.ArgumentParser) -> None:
            for args, kwargs in getattr(fn, "_args", []):
                p.add_argument(*args, **kwargs)

        COMMANDS[name] = (help, add_args, fn)
        return fn

    return deco


def arg(*args, **kwargs):
    def deco(fn):
        fn._args = [(args, kwargs)] + getattr(fn, "_args", [])
        return fn

    return deco


def _load(args: argparse.Namespace) -> C.LabConfig:
    return C.load_config(args.config, args.set)


@command("env", "report GPU, CPU, memory, disk and batch/AMP advice")
@arg("--json", action="store_true", help="print JSON instead of a table")
def cmd_env(args, cfg):
    from .environment import environment_report, resolve_paths

    paths = resolve_paths(cfg.env.data_root, cfg.env.runs_dir, cfg.env.mount_drive)
    size = cfg.model.input_size or 380
    rep = environment_report(paths["data_root"], cfg.model.backbone, size, cfg.train.target_batch)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    t = rep["torch"]
    rows = [("python", rep["python"]), ("platform", rep["platform"]),
            ("cpu cores", rep["cpu_cores"]),
            ("ram", f"{rep['ram_available_gb']} / {rep['ram_total_gb']} GiB free"),
            ("data root", rep["data_root"]), ("disk free", f"{rep['disk_free_gb']} GiB"),
            ("colab", rep["colab"]), ("torch", t["version"]),
            ("cuda / cudnn", f"{t['cuda_version'] or '-'} / {t['cudnn_version'] or '-'}"),
            ("cuda available", t["cuda_available"])]
    for g in rep["nvidia_smi"]:
        rows.append((f"gpu {g['index']}", f"{g['name']}, {g['memory_free_mib']}/"
                     f"{g['memory_total_mib']} MiB free, driver {g['driver']}, "
                     f"cc {g['capability'] or '?'}"))
    if not rep["nvidia_smi"]:
        rows.append(("gpu", rep["nvidia_smi_note"] or "none"))
    a = rep["advice"]
    f = rep["advice_for"]
    rows.append(("advice", f"{f['backbone']} @ {f['input_size']} px: batch {a['batch_size']} x "
                 f"accumulation {a['accumulation']} = {a['effective_batch']}, amp {a['amp']}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


@command("demo-data", "build the offline demo video set (FF++ layout + labels.csv)")
@arg("--out", default="", help="output folder (default <data_root>/demo)")
@arg("--videos", type=int, default=None, help="about how many clips (default data.demo_videos)")
@arg("--seed", type=int, default=None, help="seed (default 0: the one demo set every run uses)")
@arg("--seconds", type=float, default=2.0, help="clip length in seconds")
def cmd_demo_data(args, cfg):
    from .demo import DEMO_SEED, build_demo_dataset
    from .environment import resolve_paths
    from .events import TqdmCallback

    out = args.out or str(resolve_paths(cfg.env.data_root, cfg.env.runs_dir,
                                        cfg.env.mount_drive)["data_root"] / "demo")
    labels = build_demo_dataset(out, args.videos or cfg.data.demo_videos,
                                DEMO_SEED if args.seed is None else args.seed,
                                seconds=args.seconds, callbacks=[TqdmCallback()])
    n = sum(1 for _ in open(labels)) - 1
    print(f"wrote {n} clips and {labels}")
    return 0


@command("demo", "run the whole pipeline headless on the demo set and print a report")
@arg("--json", action="store_true", help="print the whole report as JSON")
def cmd_demo(args, cfg):
    from .pipeline import format_demo_report, run_demo

    report = run_demo(cfg)
    print(json.dumps(report, indent=2, default=str) if args.json else format_demo_report(report))
    return 0


def _paths(cfg):
    from .environment import resolve_paths

    return resolve_paths(cfg.env.data_root, cfg.env.runs_dir, cfg.env.mount_drive)


@command("sources", "list the registered video sources")
def cmd_sources(args, cfg):
    from .sources import SOURCES

    for name in SOURCES.list():
        print(f"{name:<8} {SOURCES.help(name)}")
    return 0


@command("detectors", "list the registered face detectors")
def cmd_detectors(args, cfg):
    from .faces import DETECTORS

    for name in DETECTORS.list():
        print(f"{name:<6} {DETECTORS.help(name)}")
    return 0


def source_records(cfg, source: str = "", root: str = "", labels: str = "", splits_dir: str = ""):
    """Records of the configured (or given) source; shared by preprocess and the dashboard."""
    from .sources import list_videos

    source = source or cfg.data.source
    root = root or cfg.data.root or str(_paths(cfg)["data_root"] / source)
    kwargs = {}
    if source == "folder" and labels:
        kwargs["labels"] = labels
    if source == "ffpp":
        kwargs.update(splits_dir=splits_dir or cfg.data.splits_dir, methods=None,
                      compressions=cfg.data.compressions or None)
    return list_videos(source, root, **kwargs), root


@command("preprocess", "videos -> face crops, frames, per-frame JSON, audio features, index")
@arg("--source", default="", help="video source (default data.source); see `dflab sources`")
@arg("--root", default="", help="folder of the source (default data.root or <data_root>/<source>)")
@arg("--labels", default="", help="labels CSV for the folder source (default <root>/labels.csv)")
@arg("--splits-dir", default="", help="FF++ split files (default <root>/splits)")
@arg("--out", default="", help="output folder (default <data_root>/processed/<source>)")
@arg("--shard", default="0/1", help="process shard i of N (i/N), to split work across machines")
@arg("--index-only", action="store_true", help="only rebuild index.csv and stats.json")
def cmd_preprocess(args, cfg):
    from .events import TqdmCallback
    from .preprocess import build_index, parse_shard, preprocess_videos
    from .stats import dataset_stats

    source = args.source or cfg.data.source
    out = Path(args.out) if args.out else _paths(cfg)["processed"] / source
    if not args.index_only:
        records, root = source_records(cfg, source, args.root, args.labels, args.splits_dir)
        missing = [r for r in records if not r.exists]
        print(f"{len(records)} videos from {source} at {root}"
              + (f" ({len(missing)} listed but missing on disk)" if missing else ""))
        report = preprocess_videos(records, out, cfg.preprocess, parse_shard(args.shard),
                                   cache_dir=str(_paths(cfg)["cache"]),
                                   callbacks=[TqdmCallback()])
        print(f"processed {report['processed']}, skipped (already done) "
              f"{report['skipped_finished']}, failed {report['failed']}; {report['frames']} "
              f"frames, face coverage {report['coverage']:.1%}")
        for uid, err in report["errors"].items():
            print(f"  error {uid}: {err}")
    else:
        build_index(out)
    stats = dataset_stats(out)
    print(f"index: {out / 'index.csv'}; stats: {out / 'stats.json'} ({stats['videos']} videos, "
          f"{stats['frames']} frames)")
    return 0


@command("faces", "face tools: `dflab faces finetune` trains a YOLO face detector")
@arg("action", choices=["finetune"], help="what to do")
@arg("--images", required=True, help="folder of images (e.g. a processed folder's frames)")
@arg("--out", required=True, help="output folder for the dataset and the trained weights")
@arg("--base", default="yolov8n.yaml", help="model yaml (from scratch), .pt file, or ultralytics name")
@arg("--epochs", type=int, default=30)
@arg("--imgsz", type=int, default=320)
@arg("--batch", type=int, default=16)
@arg("--labeler", default="yunet", help="detector that labels the images (yunet recommended)")
@arg("--max-images", type=int, default=2000, help="use at most this many images")
def cmd_faces(args, cfg):
    from .faces import create_detector, finetune_yolo
    from .sources import IMAGE_EXTS

    images = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTS
                    and "crops" not in p.parts)[: args.max_images]
    if not images:
        raise FileNotFoundError(f"no images under '{args.images}'")
    labeler = create_detector(args.labeler, cfg.preprocess.detector_weights,
                              cfg.preprocess.det_size, cfg.preprocess.min_confidence,
                              cache_dir=str(_paths(cfg)["cache"]))
    best = finetune_yolo(images, args.out, labeler, args.base, args.epochs, args.imgsz,
                         args.batch, seed=cfg.env.seed)
    print(f"trained on {len(images)} images; weights: {best}\n"
          f"use them with: --set preprocess.detector=yolo preprocess.detector_weights={best}")
    return 0


def _processed(cfg, given: str) -> Path:
    return Path(given) if given else _paths(cfg)["processed"] / cfg.data.source


@command("train", "train the visual detector on preprocessed crops (resumable)")
@arg("--processed", default="", help="preprocessed folder (default <data_root>/processed/<source>)")
@arg("--name", default="", help="run name: runs/train-<name> (default: a timestamp)")
@arg("--resume", action="store_true", help="continue runs/train-<name> from its last checkpoint")
def cmd_train(args, cfg):
    from .events import TqdmCallback
    from .train import train

    if args.resume and not args.name:
        raise ValueError("--resume needs --name of the run to continue")
    run = train(cfg, _processed(cfg, args.processed), _paths(cfg)["runs"], args.name,
                args.resume, callbacks=[TqdmCallback()])
    print(f"run: {run}")
    return 0


@command("evaluate", "evaluate a run: threshold from val, metrics per method, frame and video")
@arg("--run", required=True, help="run folder (runs/train-<name>)")
@arg("--processed", default="", help="preprocessed folder (default: the one the run used)")
@arg("--split", default="test", choices=["train", "val", "test"])
@arg("--checkpoint", default="best.pt")
def cmd_evaluate(args, cfg):
    from .evaluate import evaluate_run

    rep = evaluate_run(args.run, _processed(cfg, args.processed), args.split, cfg.eval,
                       args.checkpoint)
    print(f"{args.split}: threshold {rep['threshold']:.3f} ({rep['threshold_source']})")
    _print_report(rep)
    print(f"report: {Path(args.run) / f'eval_{args.split}.json'}")
    return 0


def _print_report(rep: dict, indent: str = "  ") -> None:
    """Frame and video metrics of one evaluation report, each AUC with its 95% interval."""
    from .metrics import format_auc

    f, v = rep["frame"], rep["video"]
    print(f"{indent}frame: n={f['n']} frames of {f.get('n_videos', '?')} videos "
          f"acc={f['accuracy']:.3f} auc={format_auc(f)} f1={f['f1']:.3f} ece={f['ece']:.3f}")
    print(f"{indent}video: n={v['n']} acc={v['accuracy']:.3f} auc={format_auc(v)} f1={v['f1']:.3f}")
    for m, mm in rep["video_per_method"].items():
        print(f"{indent}video {m:<16} n={mm['n']} acc={mm['accuracy']:.3f} auc={format_auc(mm)}")


@command("export", "export a run's best checkpoint to ONNX and check parity with onnxruntime")
@arg("--run", required=True, help="run folder")
@arg("--out", default="", help="ONNX path (default <run>/model.onnx)")
@arg("--checkpoint", default="best.pt")
def cmd_export(args, cfg):
    from .export import export_onnx

    rep = export_onnx(args.run, args.out, cfg.export, args.checkpoint)
    print(f"{rep['onnx']} ({rep['bytes'] / 2**20:.1f} MiB), opset {rep['opset']}, onnxruntime vs "
          f"torch max abs diff {rep['max_abs_diff']:.2e} (tolerance {rep['parity_tol']:.0e})")
    return 0


@command("fuse", "fit the fused verdict (visual + forensic + audio) on val, evaluate on test")
@arg("--run", required=True, help="visual run folder (runs/train-<name>)")
@arg("--forensic", required=True, help="forensic run folder (runs/forensic-<name>)")
@arg("--processed", default="", help="preprocessed folder with features.csv")
@arg("--name", default="", help="run name: runs/fuse-<name>")
@arg("--checkpoint", default="best.pt")
def cmd_fuse(args, cfg):
    from .events import TqdmCallback
    from .fuse import MODELS, fuse_runs

    run = fuse_runs(cfg, args.run, args.forensic, _processed(cfg, args.processed),
                    _paths(cfg)["runs"], args.name, args.checkpoint, callbacks=[TqdmCallback()])
    rep = json.loads((run / "eval_test.json").read_text())
    for m in MODELS:
        print(f"{m} (test, threshold {rep[m]['threshold']:.3f} tuned on val):")
        _print_report(rep[m])
    print(f"run: {run}\npredict with all three: dflab predict VIDEO --model {run}")
    return 0


@command("predict", "score one image or video with a checkpoint, an ONNX model or a fuse run")
@arg("file", help="image or video")
@arg("--model", required=True, help="checkpoint (.pt), ONNX file (.onnx), or a fuse run folder "
     "(visual, forensic and fused verdicts)")
@arg("--json", action="store_true", help="print the full result as JSON")
def cmd_predict(args, cfg):
    from .predict import predict_file

    res = predict_file(args.file, args.model, aggregate=cfg.eval.aggregate,
                       margin=cfg.eval.confident_margin,
                       threshold=cfg.eval.threshold if cfg.eval.threshold >= 0 else None)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    prob = "-" if res["probability"] is None else f"{res['probability']:.3f}"
    print(f"{res['file']}: {res['verdict'].upper()} (p(fake)={prob}, threshold "
          f"{res['threshold']:.3f}, {res['backend']}, {len(res['frames'])} frames with a face of "
          f"{res['frames_sampled']} sampled)")
    if res.get("probabilities"):
        print("  p(fake) per model: " + ", ".join(f"{m} {p:.3f}" for m, p in
                                                  res["probabilities"].items())
              + ("" if res.get("has_audio") else " (no audio track)"))
    for r in res["frames"]:
        extra = (f" visual={r['prob_visual']:.3f} forensic={r['prob_forensic']:.3f}"
                 if "prob_visual" in r else "")
        print(f"  frame {r['frame_index']:>6} t={r['timestamp']:>7.2f}s p(fake)={r['prob']:.3f}"
              + extra)
    return 0


@command("features", "compute the ~50 forensic features of every crop (cached per crop)")
@arg("--processed", default="", help="preprocessed folder (default <data_root>/processed/<source>)")
def cmd_features(args, cfg):
    from .events import TqdmCallback
    from .features import FEATURE_HELP, feature_names
    from .forensic import compute_features

    path = compute_features(_processed(cfg, args.processed), cfg, callbacks=[TqdmCallback()])
    print(f"{len(feature_names())} features per crop -> {path}")
    if args.verbose:
        for n in feature_names():
            print(f"  {n:<24} {FEATURE_HELP[n]}")
    return 0


@command("train-forensic", "train the MLP (and a logistic baseline) on the forensic features")
@arg("--processed", default="", help="preprocessed folder with features.csv")
@arg("--name", default="", help="run name: runs/forensic-<name>")
@arg("--importance", action="store_true", help="also compute permutation importance on test")
def cmd_train_forensic(args, cfg):
    from .events import TqdmCallback
    from .forensic import permutation_importance_table, train_forensic

    processed = _processed(cfg, args.processed)
    run = train_forensic(cfg, processed, _paths(cfg)["runs"], args.name,
                         callbacks=[TqdmCallback()])
    rep = json.loads((run / "eval_test.json").read_text())
    for model, r in rep.items():
        print(f"{model} (test, threshold {r['threshold']:.3f} tuned on val):")
        _print_report(r)
    if args.importance:
        table = permutation_importance_table(run, processed)
        table.to_csv(run / "permutation_importance.csv", index=False)
        print("top features by permutation importance (drop in ROC-AUC):")
        for _, row in table.head(10).iterrows():
            print(f"  {row['feature']:<24} {row['importance']:.4f} ± {row['std']:.4f}")
    print(f"run: {run}")
    return 0


def _ffpp_servers(cfg, given: list[str]) -> list[str]:
    import os

    raw = given or [cfg.data.ffpp_server or os.environ.get("DFLAB_FFPP_SERVER", "")]
    return [x.strip() for item in raw for x in item.split(",") if x.strip()]


@command("download", "fetch FF++ (split-aware subset) or DFDC parts; resumable, no prompts")
@arg("dataset", choices=["ffpp", "dfdc"])
@arg("--root", default="", help="destination (default <data_root>/<dataset>)")
@arg("--server", action="append", default=[], help="FF++ server address (repeat for fallbacks; "
     "default data.ffpp_server or $DFLAB_FFPP_SERVER)")
@arg("--accept-tos", action="store_true", help="I accept the FaceForensics++ terms of use")
@arg("--workers", type=int, default=4, help="parallel downloads")
@arg("--masks", action="store_true", help="FF++: fetch the manipulation masks instead of videos")
def cmd_download(args, cfg):
    from .events import TqdmCallback

    root = Path(args.root) if args.root else _paths(cfg)["data_root"] / args.dataset
    if args.dataset == "ffpp":
        from .acquire import download_ffpp

        rep = download_ffpp(root, _ffpp_servers(cfg, args.server),
                            args.accept_tos or cfg.data.ffpp_accept_tos, cfg.data.methods,
                            cfg.data.compressions, cfg.data.videos_per_split,
                            cfg.data.splits_dir, args.workers,
                            "masks" if args.masks else "videos", callbacks=[TqdmCallback()])
        print(f"{rep['fetched']} fetched, {rep['already_done']} already there, "
              f"{len(rep['failed'])} failed, {rep['bytes'] / 2**20:.1f} MiB -> {root}")
        for path, err in rep["failed"].items():
            print(f"  failed {path}: {err}")
        return 1 if rep["failed"] else 0
    from .acquire import KaggleClient, stream_dfdc

    rep = stream_dfdc(KaggleClient(), root, lambda part: None, cfg.data.dfdc_parts,
                      cfg.data.max_disk_gb, keep_raw=True, callbacks=[TqdmCallback()])
    print(f"parts {rep['processed']} extracted under {root / 'raw'}")
    return 0


@command("fetch-and-preprocess", "download and preprocess; DFDC part by part under a disk budget")
@arg("dataset", choices=["ffpp", "dfdc"])
@arg("--root", default="", help="raw data folder (default <data_root>/<dataset>)")
@arg("--out", default="", help="processed folder (default <data_root>/processed/<dataset>)")
@arg("--server", action="append", default=[], help="FF++ server address(es)")
@arg("--accept-tos", action="store_true", help="I accept the FaceForensics++ terms of use")
def cmd_fetch_and_preprocess(args, cfg):
    from .events import TqdmCallback
    from .preprocess import preprocess_videos
    from .sources import list_videos
    from .stats import dataset_stats

    paths = _paths(cfg)
    root = Path(args.root) if args.root else paths["data_root"] / args.dataset
    out = Path(args.out) if args.out else paths["processed"] / args.dataset
    cb = [TqdmCallback()]

    def process(folder: Path, source: str) -> None:
        rep = preprocess_videos(list_videos(source, folder), out, cfg.preprocess,
                                cache_dir=str(paths["cache"]), callbacks=cb)
        print(f"{folder.name}: {rep['processed']} videos, coverage {rep['coverage']:.1%}, "
              f"{rep['failed']} failed")

    if args.dataset == "ffpp":
        from .acquire import download_ffpp

        download_ffpp(root, _ffpp_servers(cfg, args.server),
                      args.accept_tos or cfg.data.ffpp_accept_tos, cfg.data.methods,
                      cfg.data.compressions, cfg.data.videos_per_split, cfg.data.splits_dir,
                      callbacks=cb)
        process(root, "ffpp")
    else:
        from .acquire import KaggleClient, stream_dfdc

        rep = stream_dfdc(KaggleClient(), root, lambda part: process(part, "dfdc"),
                          cfg.data.dfdc_parts, cfg.data.max_disk_gb, callbacks=cb)
        print(f"peak raw disk {rep['peak_raw_bytes'] / 2**30:.2f} GiB of a "
              f"{cfg.data.max_disk_gb} GiB budget")
    stats = dataset_stats(out)
    print(f"{stats['videos']} videos, {stats['frames']} frames in {out}")
    return 0


@command("weights", "pretrained backbone weights without the hub: `dflab weights fetch NAME --to DIR`")
@arg("action", choices=["fetch", "check"], help="fetch: download (needs internet); check: load "
     "model.weights_path (or --to) offline")
@arg("backbone", help="timm model name, e.g. efficientnet_b4")
@arg("--to", default="", help="folder to keep the weights in (e.g. on Google Drive)")
def cmd_weights(args, cfg):
    from .models import fetch_weights, hub_id, resolve_weights

    if args.action == "fetch":
        if not args.to:
            raise ValueError("`dflab weights fetch` needs --to DIR, the folder to keep the weights")
        path = fetch_weights(args.backbone, args.to)
        print(f"{args.backbone} ({hub_id(args.backbone) or 'timm release'}) -> {path}\n"
              f"use them offline with: --set model.backbone={args.backbone} "
              f"model.pretrained=true model.weights_path={args.to}")
        return 0
    where = args.to or cfg.model.weights_path
    if not where:
        raise ValueError("`dflab weights check` needs --to DIR or model.weights_path")
    path = resolve_weights(args.backbone, where)
    from .config import ModelConfig
    from .models import create_model

    create_model(ModelConfig(backbone=args.backbone, pretrained=True, weights_path=str(where)))
    print(f"{args.backbone}: loaded {path} offline")
    return 0


@command("config", "show the resolved config, or list every key with its help")
@arg("--list", action="store_true", help="list keys, types, bounds and help")
def cmd_config(args, cfg):
    if args.list:
        for key, f, value in C.iter_fields(cfg):
            meta = f.metadata
            bounds = (f" {meta['choices']}" if "choices" in meta else
                      f" [{meta['min']}, {meta['max']}]" if "min" in meta else "")
            print(f"{key} = {value!r}  ({C.field_type(f).__name__}{bounds}) {meta.get('help', '')}")
        return 0
    import yaml

    print(yaml.safe_dump(C.config_to_dict(cfg), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dflab", description="The deepfake detection lab.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", default=None, help="YAML preset (see configs/)")
        p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="config overrides, e.g. train.lr=3e-4 model.backbone=resnet18")
        add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # dflab's own messages at INFO; other libraries' (e.g. the ONNX exporter's passes) only from
    # WARNING, unless -v
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dflab").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        cfg = _load(args)
        return COMMANDS[args.command][2](args, cfg) or 0
    except (C.ConfigError, FileNotFoundError, ValueError, RuntimeError, OSError, KeyError,
            PermissionError) as exc:
        print(f"dflab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dflab {args.command}: interrupted; finished work is kept, re-run to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

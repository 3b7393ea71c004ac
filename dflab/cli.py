"""``dflab`` command line: a thin parser over the same functions the dashboard calls."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from dflab.core import config as C
from dflab.core.jobs import JOB_PROCESS, job_process_main
from dflab.core.runs import RUN_KINDS

log = logging.getLogger("dflab")

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str):
    """Register a subcommand: the decorated function gets (args, lab) and prints the result."""

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


def _lab(args: argparse.Namespace):
    from dflab.lab import Lab

    return Lab(args.config, args.set)


def _cluster(args: argparse.Namespace, lab) -> None:
    """--cluster sets env.cluster (the lab checks it before any work starts)."""
    if args.cluster is not None:
        lab.cfg.env.cluster = args.cluster


def _bar() -> list:
    from dflab.core.events import TqdmCallback

    return [TqdmCallback()]


@command("env", "report GPU, CPU, memory, disk and batch/AMP advice")
@arg("--json", action="store_true", help="print JSON instead of a table")
def cmd_env(args, lab):
    res = lab.environment()
    print(json.dumps(res.report, indent=2) if args.json else res)


@command("demo-data", "build the offline demo video set (FF++ layout + labels.csv)")
@arg("--out", default="", help="output folder (default <data_root>/demo)")
@arg("--videos", type=int, default=0, help="about how many clips (default data.demo_videos)")
@arg("--seed", type=int, default=None, help="seed (default 0: the one demo set every run uses)")
@arg("--seconds", type=float, default=2.0, help="clip length in seconds")
@arg("--talking", action="store_true", help="the talking set instead (<data_root>/demo_av): "
     "a mouth that opens with the speech; AudioShift and AudioSwap fakes for `dflab sync`")
def cmd_demo_data(args, lab):
    if args.talking:  # three clips per identity
        print(lab.demo_av_data(args.out, max(6, args.videos // 3) if args.videos else 0,
                               callbacks=_bar()))
    else:
        print(lab.demo_data(args.videos, args.seed, args.seconds, args.out, callbacks=_bar()))


@command("demo", "run the whole pipeline headless on the demo set (or, with --real, on real "
         "FF++/DFDC clips and face photos) and print a report")
@arg("--json", action="store_true", help="print the whole report as JSON")
@arg("--real", action="store_true", help="real data instead: the SBI network and the forensic "
     "MLP trained on real faces only, an ordinary network on FF++ fakes, per-method AUCs")
@arg("--shared", default="", help="with --real: the folder laid out as ../shared/data (ffpp/, "
     "ffpp_valtest/, dfdc/, faces/); default $DFLAB_SHARED_DATA or ../shared/data")
@arg("--epochs", type=int, default=4, help="with --real: epochs of the SBI network")
@arg("--name", default="", help="with --real: the runs' name (the same name again resumes an "
     "interrupted run and keeps its finished parts)")
@arg("--photos", type=int, default=3000, help="with --real: at most this many face photos "
     "(0: all 7,249; 3000 keeps the run within 15 minutes on 2 cores)")
def cmd_demo(args, lab):
    if args.real:
        shared = args.shared or os.environ.get("DFLAB_SHARED_DATA") or str(
            Path.cwd().parent / "shared" / "data")
        res = lab.real(shared, args.name, epochs=args.epochs, photos=args.photos,
                       callbacks=_bar())
    else:
        res = lab.demo(callbacks=_bar())
    print(json.dumps(res.report, indent=2, default=str) if args.json else res)


@command("sources", "list the registered video sources")
def cmd_sources(args, lab):
    from dflab.data.sources import SOURCES

    for name in SOURCES.list():
        print(f"{name:<8} {SOURCES.help(name)}")


@command("detectors", "list the registered face detectors")
def cmd_detectors(args, lab):
    from dflab.data.faces import DETECTORS

    for name in DETECTORS.list():
        print(f"{name:<6} {DETECTORS.help(name)}")
    pp = lab.preprocess_settings()
    print(f"preprocess.detector={lab.cfg.preprocess.detector} uses: {pp.detector}"
          + (f" ({pp.detector_weights})" if pp.detector_weights else ""))


@command("preprocess", "videos -> face crops, frames, per-frame JSON, audio features, index")
@arg("--source", default="", help="video source (default data.source); see `dflab sources`")
@arg("--root", default="", help="folder of the source (default data.root or <data_root>/<source>)")
@arg("--labels", default="", help="labels CSV for the folder source (default <root>/labels.csv)")
@arg("--splits-dir", default="", help="FF++ split files (default data.splits_dir or <root>/splits)")
@arg("--out", default="", help="output folder (default <data_root>/processed/<source>)")
@arg("--shard", default="0/1", help="process shard i of N (i/N), to split work across machines")
@arg("--index-only", action="store_true", help="only rebuild index.csv and stats.json")
@arg("--force", action="store_true", help="re-process every video when the folder was made "
     "with other settings (default: refuse and name the settings that differ)")
@arg("--cluster", default=None, help="Dask scheduler: tcp://HOST:8786 or local:N (env.cluster); "
     "the output folder must be on storage every worker sees")
def cmd_preprocess(args, lab):
    _cluster(args, lab)
    res = lab.preprocess(args.source, args.root, args.labels, args.splits_dir, args.out,
                         args.shard, args.index_only, force=args.force, callbacks=_bar())
    print(res)
    return EXIT_ITEMS_FAILED if res.failed else EXIT_OK


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
def cmd_faces(args, lab):
    print(lab.finetune_faces(args.images, args.out, args.base, args.epochs, args.imgsz,
                             args.batch, args.labeler, args.max_images))


def run_args(kind: str, processed_help: str):
    """The --processed and --name arguments of a command that makes a run of ``kind``."""

    def deco(fn):
        fn = arg("--name", default="", help=f"run name: runs/{kind}-<name> (default: a "
                 f"timestamp)")(fn)
        return arg("--processed", default="", help=processed_help)(fn)

    return deco


@command("train", "train the visual detector on preprocessed crops (resumable)")
@run_args("train", "preprocessed folder (default <data_root>/processed/<source>)")
@arg("--resume", action="store_true", help="continue runs/train-<name> from its last checkpoint")
def cmd_train(args, lab):
    print(lab.train(args.processed, args.name, args.resume, callbacks=_bar()))


@command("evaluate", "evaluate a run: threshold from val, metrics per method, frame and video")
@arg("--run", required=True, help="run folder: train (the visual model) or forensic (scores "
     "any processed folder with the MLP and the logistic baseline)")
@arg("--processed", default="", help="preprocessed folder (default: the one the run was "
     "trained on)")
@arg("--split", default="test", choices=["train", "val", "test", "all"],
     help="which crops (all: every split; forensic runs only)")
@arg("--checkpoint", default="best.pt")
def cmd_evaluate(args, lab):
    print(lab.evaluate(args.run, args.processed, args.split, args.checkpoint, callbacks=_bar()))


@command("export", "export a run's best checkpoint to ONNX and check parity with onnxruntime")
@arg("--run", required=True, help="run folder")
@arg("--out", default="", help="ONNX path (default <run>/model.onnx)")
@arg("--checkpoint", default="best.pt")
@arg("--int8", action="store_true", help="also write model.int8.onnx: static int8 quantisation "
     "calibrated on training crops, compared with the float model on the test split")
def cmd_export(args, lab):
    print(lab.export(args.run, args.out, args.checkpoint, int8=args.int8))


@command("fuse", "fit the fused verdict (visual + forensic + audio) on val, evaluate on test")
@arg("--run", required=True, help="visual run folder (runs/train-<name>)")
@arg("--forensic", default="", help="forensic run folder (default: the newest)")
@arg("--processed", default="", help="preprocessed folder with features.csv (default: the "
     "visual run's)")
@arg("--name", default="", help="run name: runs/fuse-<name>")
@arg("--checkpoint", default="best.pt")
@arg("--sync", default="", help="a sync run (`dflab sync train`): its scores join the stacker "
     "for clips with sync windows")
def cmd_fuse(args, lab):
    print(lab.fuse(args.run, args.forensic, args.processed, args.name, args.checkpoint,
                   callbacks=_bar(), sync=args.sync))


@command("sync", "audio-visual sync: `dflab sync extract` (mouth windows + MFCC), `sync train` "
         "(SyncNet-style, real clips only), `sync score` (offsets, confidence, AUC)")
@arg("action", choices=["extract", "train", "score"])
@arg("--processed", default="", help="preprocessed folder (default <data_root>/processed/"
     "<data.source>; score: the sync run's)")
@arg("--run", default="", help="score: the sync run (default: the newest)")
@arg("--name", default="", help="train: run name: runs/sync-<name>")
@arg("--split", default="test", choices=["train", "val", "test", "all"], help="score: the split")
@arg("--shifts", default="", help="score: JSON of true offsets {video path: seconds, sound "
     "early > 0} to report offset errors (the talking demo set's shifts.json)")
def cmd_sync(args, lab):
    if args.action == "extract":
        res = lab.sync_extract(args.processed, callbacks=_bar())
        print(res)
        return 1 if res.report["failed"] else 0
    if args.action == "train":
        print(lab.sync_train(args.processed, args.name, callbacks=_bar()))
        return 0
    run = args.run
    if not run:
        found = lab.runs("sync")
        if not found:
            raise ValueError("no sync run to score with: train one first (`dflab sync train`)")
        run = found[0]
    print(lab.sync_score(run, args.processed, args.split, args.shifts, callbacks=_bar()))
    return 0


@command("predict", "score videos, images, folders or globs with a trained model, in one load")
@arg("inputs", nargs="+", metavar="INPUT", help="videos, images, folders (searched recursively) "
     "or globs (quote them: 'clips/**/*.mp4')")
@arg("--model", required=True, help="a run folder (train: its ONNX export or best.pt; forensic; "
     "fuse: visual, forensic and fused verdicts), a checkpoint (.pt) or an ONNX file")
@arg("--faces", action="store_true", help="the inputs are face crops already: no detection")
@arg("--report", default="", help="write the batch: .csv (one row per input, and "
     "<stem>_frames.csv) or .json (everything)")
@arg("--json", action="store_true", help="print the model and every result as JSON")
def cmd_predict(args, lab):
    many = len(args.inputs) > 1 or not Path(args.inputs[0]).is_file()
    res = lab.predict_batch(args.inputs, args.model, args.faces, args.report,
                            callbacks=_bar() if many else None)
    if args.json:
        print(json.dumps({"model": res.model, "results": [r.data for r in res.results]},
                         indent=2))
    else:
        print(res)
    return EXIT_ITEMS_FAILED if res.failed else EXIT_OK


@command("explain", "Grad-CAM overlays: where the visual model looks when it says fake")
@arg("inputs", nargs="+", metavar="INPUT", help="videos, images, folders or globs")
@arg("--run", required=True, help="a train run (or a fuse run: its visual model)")
@arg("--out", default="", help="folder for the overlays (default <run>/explain)")
@arg("--method", default="gradcam", choices=["gradcam", "gradcam++"])
@arg("--faces", action="store_true", help="the inputs are face crops already: no detection")
@arg("--max-frames", type=int, default=8, help="overlays per video (its first sampled frames "
     "with a face)")
@arg("--checkpoint", default="best.pt")
def cmd_explain(args, lab):
    print(lab.explain(args.inputs, args.run, args.out, args.method, args.faces,
                      args.max_frames, args.checkpoint, callbacks=_bar()))


@command("robustness", "AUC under JPEG, blur, down-scaling and noise (visual, forensic, fused)")
@arg("--run", required=True, help="a fuse run (all three models), a train run or a forensic run")
@arg("--processed", default="", help="preprocessed folder (default: the run's)")
@arg("--split", default="test", choices=["val", "test"])
@arg("--perturbation", action="append", default=[], help="only these (repeat): jpeg, blur, "
     "downscale, noise")
@arg("--frames-per-video", type=int, default=4, help="crops drawn per video (0: all)")
def cmd_robustness(args, lab):
    print(lab.robustness(args.run, args.processed, args.split, args.perturbation,
                         args.frames_per_video, callbacks=_bar()))


@command("protocol", "generalisation protocols: cross-method, leave-one-out, cross-dataset "
         "(one run per cell; re-run with the same --name to resume)")
@arg("kind", choices=["cross-method", "leave-one-out", "cross-dataset"])
@arg("--name", default="", help="protocol name (runs/protocol-<name>, cells runs/train-<name>-"
     "<cell>); the same name resumes")
@arg("--processed", default="", help="the folder to train on (default <data_root>/processed/"
     "<source>)")
@arg("--test-on", action="append", default=[], help="cross-dataset: processed folder(s) to test "
     "on besides the training one's test split (repeat)")
@arg("--methods", nargs="*", default=[], help="the methods (default: every fake method in the "
     "training split)")
def cmd_protocol(args, lab):
    print(lab.protocol(args.kind, args.name, args.processed, args.test_on, args.methods,
                       callbacks=_bar()))


@command("features", "compute the ~50 forensic features of every crop (cached per crop)")
@arg("--processed", default="", help="preprocessed folder (default <data_root>/processed/<source>)")
@arg("--cluster", default=None, help="Dask scheduler: tcp://HOST:8786 or local:N (env.cluster)")
@arg("--backend", default=None, choices=["numpy", "torch"],
     help="numpy per crop on the CPU, or torch in batches (on the GPU when there is one); "
          "features.backend")
def cmd_features(args, lab):
    _cluster(args, lab)
    if args.backend is not None:
        lab.cfg.features.backend = args.backend
    from dflab.forensic.features import FEATURE_HELP

    res = lab.features(args.processed, callbacks=_bar())
    print(res)
    if args.verbose:
        for n in res.names:
            print(f"  {n:<24} {FEATURE_HELP[n]}")


@command("train-forensic", "train the MLP (and a logistic baseline) on the forensic features")
@run_args("forensic", "preprocessed folder with features.csv (default <data_root>/processed/"
          "<source>)")
@arg("--importance", action="store_true", help="also compute permutation importance on test")
def cmd_train_forensic(args, lab):
    print(lab.train_forensic(args.processed, args.name, args.importance, callbacks=_bar()))


@command("forensic", "forensic feature-set refinement: `dflab forensic refine --run RUN` "
         "(the Pareto front of AUC against ms per crop; saves a named subset)")
@arg("action", choices=["refine"])
@arg("--run", required=True, help="a forensic run (its processed folder's features.csv)")
@arg("--name", default="refined", help="name of the saved subset (features.subset=NAME)")
@arg("--direction", default="forward", choices=["forward", "backward"])
@arg("--max-steps", type=int, default=12, help="selection steps (features added or dropped)")
@arg("--tolerance", type=float, default=0.005, help="the chosen point: the cheapest on the "
     "front within this of the best CV AUC")
@arg("--pick", type=int, default=-1, help="save this point (its number in the table) instead")
@arg("--folds", type=int, default=5, help="cross-validation folds (grouped by video)")
def cmd_forensic(args, lab):
    print(lab.refine_features(args.run, args.name, args.direction, args.max_steps,
                              args.tolerance, args.pick, args.folds, callbacks=_bar()))


@command("download", "fetch FF++ (split-aware subset) or DFDC parts; resumable, no prompts")
@arg("dataset", choices=["ffpp", "dfdc"])
@arg("--root", default="", help="destination (default <data_root>/<dataset>)")
@arg("--server", action="append", default=[], help="FF++ server address (repeat for fallbacks; "
     "default data.ffpp_server or $DFLAB_FFPP_SERVER)")
@arg("--accept-tos", action="store_true", help="I accept the FaceForensics++ terms of use")
@arg("--workers", type=int, default=4, help="parallel downloads")
@arg("--masks", action="store_true", help="FF++: fetch the manipulation masks instead of videos")
def cmd_download(args, lab):
    res = lab.download(args.dataset, args.root, args.server, args.accept_tos, args.workers,
                       args.masks, callbacks=_bar())
    print(res)
    return EXIT_OK if res.ok else EXIT_ITEMS_FAILED


@command("fetch-and-preprocess", "download and preprocess; DFDC part by part under a disk budget")
@arg("dataset", choices=["ffpp", "dfdc"])
@arg("--root", default="", help="raw data folder (default <data_root>/<dataset>)")
@arg("--out", default="", help="processed folder (default <data_root>/processed/<dataset>)")
@arg("--server", action="append", default=[], help="FF++ server address(es)")
@arg("--accept-tos", action="store_true", help="I accept the FaceForensics++ terms of use")
def cmd_fetch_and_preprocess(args, lab):
    print(lab.fetch_and_preprocess(args.dataset, args.root, args.out, args.server,
                                   args.accept_tos, callbacks=_bar()))


@command("weights", "pretrained backbone weights without the hub: `dflab weights fetch NAME --to DIR`")
@arg("action", choices=["fetch", "check"], help="fetch: download (needs internet); check: load "
     "model.weights_path (or --to) offline")
@arg("backbone", help="timm model name, e.g. efficientnet_b4")
@arg("--to", default="", help="folder to keep the weights in (e.g. on Google Drive)")
def cmd_weights(args, lab):
    print(lab.fetch_weights(args.backbone, args.to) if args.action == "fetch"
          else lab.check_weights(args.backbone, args.to))


@command("runs", "list every run: kind, date, backbone, best val loss, test AUCs, and the "
         "settings in which the runs differ")
@arg("--kind", default="", choices=["", *RUN_KINDS],
     help="only runs of this kind")
@arg("--json", action="store_true", help="print JSON instead of a table")
def cmd_runs(args, lab):
    from dflab.core.runs import format_runs

    rows = lab.runs_table(args.kind)
    print(json.dumps(rows, indent=1, default=str) if args.json else format_runs(rows))


@command("jobs", "the detached jobs the dashboard started (training, preprocessing, features...):"
         " list them with their state, follow one's progress, or cancel it")
@arg("action", nargs="?", default="list", choices=["list", "follow", "cancel"])
@arg("folder", nargs="?", default="", help="the job's folder (follow, cancel; as listed)")
def cmd_jobs(args, lab):
    from dflab.core.jobs import Job, list_jobs

    if args.action == "list":
        jobs = list_jobs(lab.paths["data_root"], lab.paths["runs"])
        if not jobs:
            print(f"no jobs under {lab.paths['data_root']}")
        for job in jobs:
            st = job.status()
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.get("started", 0)))
            print(f"{st['state']:<9}  {when}  {job.method:<14}  {job.folder}")
        return 0
    if not args.folder:
        raise ValueError(f"`dflab jobs {args.action}` needs the job's folder (see `dflab jobs`)")
    job = Job(args.folder)
    if not (job.folder / "job.json").is_file():
        raise FileNotFoundError(f"'{job.folder}' is not a job folder (no job.json); "
                                f"`dflab jobs` lists them")
    if args.action == "cancel":
        job.cancel()
        print(f"cancel requested: {job.folder} (state {job.wait(120)})")
        return 0
    bar, offset = _bar()[0], job.current_offset()
    while True:
        events, offset = job.read_events(offset)
        for e in events:
            if not isinstance(e, dict):
                bar(e)
        if not job.running:
            break
        time.sleep(0.5)
    st = job.status()
    print(f"{st['state']}: {st.get('summary') or st.get('message', '')}")
    return 0 if st["state"] == "done" else EXIT_ITEMS_FAILED


@command("config", "show the resolved config, or list every key with its help")
@arg("--list", action="store_true", help="list keys, types, bounds and help")
def cmd_config(args, lab):
    cfg = lab.cfg
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
        p.add_argument("--set", nargs="*", default=[], action="extend", metavar="KEY=VALUE",
                       help="config overrides, e.g. train.lr=3e-4 model.backbone=resnet18 "
                       "(repeatable; a later value of a key wins)")
        add_args(p)
    return parser


#: exit codes (also in docs/errors.md): 0 done; 1 done, but some items failed (listed); 2 bad input
#: or an anticipated error (one line says what and what to do); 3 an unexpected error (one line,
#: the traceback in a log file); 130 interrupted (finished work is kept)
EXIT_OK, EXIT_ITEMS_FAILED, EXIT_BAD_INPUT, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# errors with a message written for the user: our own raises and the OS's (disk full, no access)
ANTICIPATED = (ValueError, OSError, ImportError, RuntimeError)


def _log_traceback(command: str) -> Path:
    """Write the current exception's traceback to a log file; returns its path."""
    from dflab.core.environment import default_cache

    folder = Path(os.environ.get("DFLAB_LOG_DIR", "") or default_cache() / "logs")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dflab-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"dflab {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [JOB_PROCESS]:  # a detached job's own process (dflab.core.jobs), not a command
        from dflab.lab import Lab

        return job_process_main(argv[1:], Lab)
    args = build_parser().parse_args(argv)
    # dflab's own messages at INFO; other libraries' (e.g. the ONNX exporter's passes) only from
    # WARNING, unless -v
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dflab").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return COMMANDS[args.command][2](args, _lab(args)) or EXIT_OK
    except KeyboardInterrupt:
        print(f"dflab {args.command}: interrupted; finished work is kept, re-run to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except ANTICIPATED as exc:
        if args.verbose:
            raise
        print(f"dflab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: one line for the user, the traceback for the report
        if args.verbose:
            raise
        path = _log_traceback(args.command)
        print(f"dflab {args.command}: unexpected error: {type(exc).__name__}: {exc} (the "
              f"traceback is in {path}; please report it)", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``dflab.Lab``: one object that holds the config and the resolved paths and runs every stage.

The CLI (``dflab COMMAND``), the dashboard and notebooks all call it, so they cannot drift::

    from dflab import Lab
    lab = Lab("cpu", data_root="data")          # a preset name or YAML file, or a LabConfig
    lab.demo_data(); lab.preprocess(source="demo")
    run = lab.train().run
    print(lab.evaluate(run)); print(lab.predict("clip.mp4", run))

Every stage takes ``callbacks`` (event sinks, e.g. a tqdm bar or a widget) and a ``cancel``
token, and returns a frozen result (:mod:`dflab.core.results`) whose ``str()`` is what the CLI prints.
Every default is resolved here, once: the processed folder (the one a run was trained on, else
``<data_root>/processed/<source>``), the source folder, the FF++ server, which detector ``auto``
picks (recorded resolved, so prediction crops exactly as training did), the model's input size.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from dflab.core.config import (LabConfig, ModelConfig, PreprocessConfig, apply_overrides,
                               load_config, preset_path)
from dflab.core.environment import environment_report, resolve_paths, setup_runtime
from dflab.core.events import Callback, CancelToken, Emitter
from dflab.core.files import read_json, sha256_file, write_json
from dflab.core.locks import shards_overlap, writing
from dflab.core.metrics import evaluate_predictions, protocol_args
from dflab.core.results import (BatchPredictResult, DemoDataResult, DemoResult, DownloadResult,
                                EnvironmentResult, EvalResult, ExplainResult, ExportResult,
                                FeaturesResult, PredictResult, PreprocessResult, ProtocolResult,
                                RefineResult, RobustnessResult, SyncExtractResult,
                                SyncScoreResult, SyncTrainResult, TrainResult, WeightsResult)
from dflab.core.runs import list_runs, read_report, report_tag, run_info, runs_table

log = logging.getLogger(__name__)

__all__ = ["Lab"]

Callbacks = Optional[list[Callback]]  # event sinks: a tqdm bar, a widget panel


class Lab:
    """The lab: ``Lab(config, overrides, data_root=...)``.

    ``config``: a :class:`LabConfig`, a preset name (``cpu``, ``default``) or a YAML file, or
    None for the built-in defaults; ``overrides``: ``["train.lr=3e-4", ...]`` or a dict.
    """

    def __init__(self, config: LabConfig | str | Path | None = None,
                 overrides: Sequence[str] | dict[str, Any] | None = None, *,
                 data_root: str | Path = ""):
        if isinstance(config, LabConfig):
            self.cfg = config
            if overrides:
                apply_overrides(self.cfg, overrides)
        else:
            self.cfg = load_config(str(config) if config else None, overrides)
        if data_root:
            self.cfg.env.data_root = str(data_root)
        # the preprocess keys the caller set: prediction applies them over a model's own
        names = overrides if isinstance(overrides, dict) else \
            [o.split("=", 1)[0].strip() for o in overrides or []]
        self._explicit_preprocess = [k.split(".", 1)[1] for k in names
                                     if k.startswith("preprocess.")]
        self._paths: tuple[tuple, dict[str, Path]] | None = None

    def derive(self, overrides: Sequence[str] | dict[str, Any], preset: str = "") -> "Lab":
        """A new Lab over a copy of this config with ``overrides`` applied, on the same data
        root (this lab's config is left as it is). ``preset``: start from that preset's
        config instead, with this lab's data root, runs folder and Drive setting."""
        if not preset:
            return Lab(copy.deepcopy(self.cfg), overrides)
        cfg = load_config(preset_path(preset))
        env = self.cfg.env
        cfg.env.data_root, cfg.env.runs_dir = env.data_root, env.runs_dir
        cfg.env.mount_drive = env.mount_drive
        return Lab(cfg, overrides)

    def __repr__(self) -> str:
        return f"Lab(data_root='{self.paths['data_root']}', backbone='{self.cfg.model.backbone}')"

    # paths and defaults ----------------------------------------------------------------------
    @property
    def paths(self) -> dict[str, Path]:
        """data_root, raw, processed, features, runs, cache (created on first use)."""
        key = (self.cfg.env.data_root, self.cfg.env.runs_dir, self.cfg.env.mount_drive)
        if self._paths is None or self._paths[0] != key:
            self._paths = (key, resolve_paths(*key))
        return self._paths[1]

    def set_data_root(self, root: str | Path) -> None:
        self.cfg.env.data_root = str(root)

    def source_root(self, source: str = "", root: str | Path = "") -> Path:
        """The folder of a video source: ``root``, else ``data.root``, else
        ``<data_root>/<source>``."""
        source = source or self.cfg.data.source
        given = root or self.cfg.data.root
        return Path(given) if given else self.paths["data_root"] / source

    def processed_dir(self, processed: str | Path = "", run: str | Path = "",
                      source: str = "") -> Path:
        """``processed`` when given; else the folder ``run`` was trained on (its run.json);
        else ``<data_root>/processed/<source or data.source>``."""
        if processed:
            return Path(processed)
        if run:
            try:
                info = run_info(run)
            except FileNotFoundError:
                info = {}
            recorded = info.get("processed", "")
            if recorded:
                index = Path(recorded) / "index.csv"
                if info.get("index_sha256") and index.is_file():
                    if sha256_file(index) != info["index_sha256"]:
                        log.warning("'%s' changed since run '%s' was made (its index.csv differs "
                                    "from the one recorded): its splits may hold other videos",
                                    recorded, Path(run).name)
                return Path(recorded)
        return self.paths["processed"] / (source or self.cfg.data.source)

    def list_videos(self, source: str = "", root: str | Path = "", labels: str = "",
                    splits_dir: str = "") -> list:
        """The video records of a source, with the data settings applied (FF++ split files and
        compressions; the folder source's labels file)."""
        from dflab.data.sources import list_videos

        source = source or self.cfg.data.source
        kwargs: dict[str, Any] = {}
        if source in ("folder", "photos"):
            d = self.cfg.data
            kwargs.update(labels=labels, val=d.val_fraction, test=d.test_fraction,
                          seed=d.split_seed)
        if source == "celebdf":
            kwargs.update(val=self.cfg.data.val_fraction, seed=self.cfg.data.split_seed)
        if source == "ffpp":
            kwargs.update(splits_dir=splits_dir or self.cfg.data.splits_dir, methods=None,
                          compressions=self.cfg.data.compressions or None)
        return list_videos(source, self.source_root(source, root), **kwargs)

    def _check_cluster(self) -> None:
        """A bad env.cluster is an error before any work starts."""
        if self.cfg.env.cluster:
            from dflab.data.cluster import check_address

            check_address(self.cfg.env.cluster)

    def preprocess_settings(self) -> PreprocessConfig:
        """``preprocess`` with ``auto`` resolved to the detector it will use (yolo for a .pt
        file, else yunet: the given file, or the packaged one as weights "") and its file."""
        from dflab.data.faces import resolve_auto

        pp = self.cfg.preprocess
        name, weights = resolve_auto(pp.detector, pp.detector_weights, self.paths["cache"])
        return dataclasses.replace(pp, detector=name, detector_weights=weights)

    def input_size(self) -> int:
        """model.input_size, or the backbone's own default from timm's pretrained config."""
        from dflab.visual.models import default_input_size

        return self.cfg.model.input_size or default_input_size(self.cfg.model.backbone)

    def ffpp_servers(self, given: Sequence[str] = ()) -> list[str]:
        """FF++ server addresses: ``given``, else data.ffpp_server, else $DFLAB_FFPP_SERVER;
        comma-separated lists are split."""
        raw = list(given) or [self.cfg.data.ffpp_server or os.environ.get("DFLAB_FFPP_SERVER",
                                                                          "")]
        return [x.strip() for item in raw for x in item.split(",") if x.strip()]

    def runs(self, kind: str = "") -> list[Path]:
        """Run folders of ``kind`` (train, forensic, fuse, demo), newest first."""
        return list_runs(self.paths["runs"], kind)

    def runs_table(self, kind: str = "") -> list[dict]:
        """Every run (of ``kind``) newest first, with its backbone, best validation loss, test
        AUCs and the settings in which the runs differ (:func:`dflab.core.runs.runs_table`)."""
        return runs_table(self.paths["runs"], kind)

    def model_for(self, run: str | Path) -> Path:
        """What ``predict`` should load for a visual run: the newest fuse run made over it
        (visual, forensic and fused verdicts), else its ONNX export, else its best checkpoint."""
        run = Path(run)
        for fuse in self.runs("fuse"):
            meta = fuse / "fuser.json"
            if meta.exists() and Path(read_json(meta)["visual_run"]) == run:
                return fuse
        onnx = run / "model.onnx"
        return onnx if onnx.exists() else run / "checkpoints" / "best.pt"

    # environment -----------------------------------------------------------------------------
    def environment(self) -> EnvironmentResult:
        """GPU, CPU, memory and disk report with batch/AMP advice for the configured model."""
        return EnvironmentResult(environment_report(
            self.paths["data_root"], self.cfg.model.backbone, self.input_size(),
            self.cfg.train.target_batch))

    def runtime(self) -> dict[str, Any]:
        """Apply env.seed, env.deterministic and env.workers to this process; the settings."""
        return setup_runtime(self.cfg.env.seed, self.cfg.env.deterministic, self.cfg.train.amp,
                             self.cfg.env.workers)

    # data ------------------------------------------------------------------------------------
    def demo_data(self, n_videos: int = 0, seed: int | None = None, seconds: float = 2.0,
                  out: str | Path = "", callbacks: Callbacks = None,
                  cancel: CancelToken | None = None) -> DemoDataResult:
        """The offline demo set (FF++ layout + labels.csv) under ``<data_root>/demo``."""
        from dflab.data.synthetic import DEMO_SEED, build_demo_dataset

        labels = build_demo_dataset(out or self.paths["data_root"] / "demo",
                                    n_videos or self.cfg.data.demo_videos,
                                    DEMO_SEED if seed is None else seed, seconds=seconds,
                                    workers=self.cfg.preprocess.workers, callbacks=callbacks,
                                    cancel=cancel)
        return DemoDataResult(Path(labels), sum(1 for _ in open(labels)) - 1)

    def download(self, dataset: str, root: str | Path = "", servers: Sequence[str] = (),
                 accept_tos: bool = False, workers: int = 4, masks: bool = False,
                 callbacks: Callbacks = None,
                 cancel: CancelToken | None = None) -> DownloadResult:
        """FF++ (the configured methods, compressions and videos per split; resumable) or the
        configured DFDC parts (extracted under ``<root>/raw``)."""
        root = Path(root) if root else self.paths["data_root"] / dataset
        d = self.cfg.data
        if dataset == "ffpp":
            from dflab.data.acquire import download_ffpp

            rep = download_ffpp(root, self.ffpp_servers(servers), accept_tos or d.ffpp_accept_tos,
                                d.methods, d.compressions, d.videos_per_split, d.splits_dir,
                                workers, "masks" if masks else "videos", callbacks=callbacks,
                                cancel=cancel)
            return DownloadResult("ffpp", root, rep["fetched"], rep["already_done"],
                                  dict(rep["failed"]), rep["bytes"])
        if dataset != "dfdc":
            raise ValueError(f"dataset '{dataset}' cannot be downloaded; use ffpp or dfdc")
        from dflab.data.acquire import KaggleClient, stream_dfdc

        rep = stream_dfdc(KaggleClient(), root, lambda part: None, d.dfdc_parts, d.max_disk_gb,
                          keep_raw=True, callbacks=callbacks, cancel=cancel)
        return DownloadResult("dfdc", root, len(rep["processed"]), 0, {},
                              int(rep.get("peak_raw_bytes", 0)))

    def preprocess(self, source: str = "", root: str | Path = "", labels: str = "",
                   splits_dir: str = "", out: str | Path = "", shard: str = "0/1",
                   index_only: bool = False, records: list | None = None,
                   force: bool = False, callbacks: Callbacks = None,
                   cancel: CancelToken | None = None) -> PreprocessResult:
        """Videos -> face crops, frames, per-frame JSON, audio features, index and statistics.
        ``records``: videos already listed (else the source's, see :meth:`list_videos`).
        A folder made with other settings is refused unless ``force`` (re-process them all)."""
        from dflab.data.preprocess import build_index, parse_shard, preprocess_videos
        from dflab.data.stats import dataset_stats

        self._check_cluster()
        source = source or self.cfg.data.source
        out = Path(out) if out else self.paths["processed"] / source
        pp = self.preprocess_settings()
        if index_only:
            build_index(out)
            rep: dict[str, Any] = {"videos": 0, "processed": 0, "skipped_finished": 0,
                                   "failed": 0, "frames": 0, "coverage": 0.0, "errors": {},
                                   "truncated": {}}
            missing = 0
        else:
            if records is None:
                records = self.list_videos(source, root, labels, splits_dir)
            missing = sum(1 for r in records if not r.exists)
            i, n = parse_shard(shard)
            with writing(out, "preprocessing", f"shard-{i}-of-{n}", shards_overlap):
                rep = preprocess_videos(records, out, pp, (i, n),
                                        cache_dir=str(self.paths["cache"]), callbacks=callbacks,
                                        cancel=cancel, force=force, cluster=self.cfg.env.cluster)
        return PreprocessResult(out, source, rep["videos"], rep["processed"],
                                rep["skipped_finished"], rep["failed"], rep["frames"],
                                rep["coverage"], pp.detector, dict(rep["errors"]),
                                dataset_stats(out), missing, dict(rep["truncated"]))

    def fetch_and_preprocess(self, dataset: str, root: str | Path = "", out: str | Path = "",
                             servers: Sequence[str] = (), accept_tos: bool = False,
                             callbacks: Callbacks = None,
                             cancel: CancelToken | None = None) -> PreprocessResult:
        """Download and preprocess; DFDC part by part under data.max_disk_gb (each part's raw
        videos are deleted once preprocessed)."""
        root = Path(root) if root else self.paths["data_root"] / dataset
        out = Path(out) if out else self.paths["processed"] / dataset
        if dataset == "ffpp":
            self.download("ffpp", root, servers, accept_tos, callbacks=callbacks, cancel=cancel)
            return self.preprocess("ffpp", root, out=out, callbacks=callbacks, cancel=cancel)
        if dataset != "dfdc":
            raise ValueError(f"dataset '{dataset}' cannot be fetched; use ffpp or dfdc")
        from dflab.data.acquire import KaggleClient, stream_dfdc
        from dflab.data.sources import list_videos

        results: list[PreprocessResult] = []
        rep = stream_dfdc(KaggleClient(), root, lambda part: results.append(self.preprocess(
            "dfdc", out=out, records=list_videos("dfdc", part), callbacks=callbacks,
            cancel=cancel)), self.cfg.data.dfdc_parts, self.cfg.data.max_disk_gb,
            callbacks=callbacks, cancel=cancel)
        log.info("DFDC: peak raw disk %.2f GiB of a %s GiB budget",
                 rep["peak_raw_bytes"] / 2**30, self.cfg.data.max_disk_gb)
        if not results:
            return self.preprocess("dfdc", out=out, index_only=True)
        return dataclasses.replace(
            results[-1], videos=sum(r.videos for r in results),
            processed=sum(r.processed for r in results),
            skipped=sum(r.skipped for r in results), failed=sum(r.failed for r in results),
            frames=sum(r.frames for r in results),
            errors={k: v for r in results for k, v in r.errors.items()})

    # visual model ----------------------------------------------------------------------------
    def train(self, processed: str | Path = "", name: str = "", resume: bool = False,
              callbacks: Callbacks = None, cancel: CancelToken | None = None) -> TrainResult:
        """Train the visual detector (resumable: ``resume=True`` with the run's ``name``)."""
        from dflab.visual.train import train

        if resume and not name:
            raise ValueError("resume needs the name of the run to continue (--name)")
        # a named run has one writer (under torchrun, rank 0 holds it for every rank)
        lock = writing(self.paths["runs"] / f"train-{name}", "training", "train") \
            if name and os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
        with lock:
            run = train(self.cfg, self.processed_dir(processed), self.paths["runs"], name,
                        resume, callbacks=callbacks, cancel=cancel)
        s = read_json(run / "train_summary.json")
        return TrainResult(run, s["best_epoch"], s["best_val_loss"], s["last_epoch"],
                           s["stopped_early"], s["seconds"])

    def evaluate(self, run: str | Path, processed: str | Path = "", split: str = "test",
                 checkpoint: str = "best.pt", callbacks: Callbacks = None,
                 cancel: CancelToken | None = None) -> EvalResult:
        """Threshold tuned on val; frame and video metrics on ``split``, per method, with
        bootstrap intervals; writes eval_<split>.json and predictions_<split>.csv (another
        folder than the run's own: eval_<split>_<folder name>.json)."""
        from dflab.visual.evaluate import evaluate_run

        if run_info(run)["kind"] == "forensic":
            return self.score_forensic(run, processed, split, callbacks, cancel)
        folder = self.processed_dir(processed, run)
        tag = report_tag(run, folder, split)
        rep = evaluate_run(run, folder, split, self.cfg.eval, checkpoint, callbacks=callbacks,
                           cancel=cancel, tag=tag)
        return EvalResult(Path(run), tag, {"visual": rep})

    def score_forensic(self, run: str | Path, processed: str | Path = "", split: str = "test",
                       callbacks: Callbacks = None,
                       cancel: CancelToken | None = None) -> EvalResult:
        """Score any processed folder with a trained forensic run (the MLP and the logistic
        baseline): its features are computed (cached per crop) when missing, every crop of
        ``split`` (``all``: every split) is scored, and with both classes present each model
        gets the report evaluate writes. Another folder than the run's own is written to
        ``eval_<split>_<folder>.json`` and ``predictions_<split>_<folder>.csv``, never over the
        run's own test report."""

        from dflab.forensic.scorer import ForensicScorer
        from dflab.data.datasets import faceless_frames

        run = Path(run)
        folder = self.processed_dir(processed, run)
        scorer = ForensicScorer.load(run)
        if not (folder / "features.csv").is_file():
            self.features(folder, callbacks=callbacks, cancel=cancel, names=scorer.names)
        from dflab.forensic.model import load_features

        df, names = load_features(folder, scorer.names)
        part = df if split == "all" else df[df["split"] == split]
        if part.empty:
            raise ValueError(f"'{folder}' has no crops in split '{split}' (it has "
                             f"{sorted(df['split'].unique())}); give --split all to score every crop")
        scores = scorer.scores(part[scorer.names].to_numpy())
        tag = report_tag(run, folder, split)
        table = part[["uid", "dataset", "method", "compression", "video_id", "label", "split",
                      "target", "frame_index", "crop_path"]].copy()
        for m, p in scores.items():
            table[f"prob_{m}"] = p
        table.to_csv(run / f"predictions_{tag}.csv", index=False)
        e, reports = self.cfg.eval, {}
        faceless = faceless_frames(folder)
        if table["target"].nunique() == 2:
            for m, thr in (("mlp", scorer.threshold), ("logreg", (scorer.logreg or {}).get(
                    "threshold"))):
                key = "forensic" if m == "mlp" else m
                if key in scores:
                    reports[m] = evaluate_predictions(
                        table.assign(prob=scores[key]), thr, seed=self.cfg.env.seed,
                        **protocol_args(e, faceless if split == "all" else
                                        faceless[faceless["split"] == split]))
            write_json(run / f"eval_{tag}.json", reports)
        extra = (f"scored {len(table)} crops of '{folder}' ({split}) -> "
                 f"{run / f'predictions_{tag}.csv'}")
        if not reports:
            extra += "; one class only: no metrics"
        return EvalResult(run, tag, reports, extra)

    def export(self, run: str | Path, out: str | Path = "", checkpoint: str = "best.pt",
               int8: bool = False, callbacks: Callbacks = None,
               cancel: CancelToken | None = None) -> ExportResult:
        """ONNX export of a run's checkpoint, checked against torch with onnxruntime. A fuse
        run gets a self-contained bundle: its visual model as model.onnx, the forensic model
        (forensic_model.npz) and any detector file, copied into the fuse folder. ``int8``: also
        ``model.int8.onnx`` (see :func:`dflab.serve.export.export_int8`)."""
        from dflab.forensic.scorer import FORENSIC_FILE, ForensicScorer
        from dflab.serve.export import export_onnx

        run = Path(run)
        em = Emitter("export", callbacks, cancel)
        em.progress(0, 1, "step", "exporting")
        fuse = (run / "fuser.json").is_file()
        if fuse:
            from dflab.serve.bundle import sibling_run

            meta = read_json(run / "fuser.json")
            vrun, frun = sibling_run(meta["visual_run"], run), sibling_run(meta["forensic_run"], run)
            rep = export_onnx(vrun, out or run / "model.onnx", self.cfg.export,
                              meta.get("checkpoint", checkpoint),
                              progress=lambda d, n, what: em.progress(d, n + 1, "step", what))
            shutil.copy2(frun / FORENSIC_FILE, run / FORENSIC_FILE)
            ForensicScorer.load(run)  # it reads back
            em.progress(5, 5, "step", "forensic model copied")
            if meta.get("fuser_sync"):  # the sync model too: the folder alone predicts
                shutil.copy2(sibling_run(meta["sync_run"], run) / "sync.pt", run / "sync.pt")
        else:
            rep = export_onnx(run, out, self.cfg.export, checkpoint,
                              progress=lambda d, n, what: em.progress(d, n, "step", what))
        q = None
        if int8:
            from dflab.serve.export import export_int8

            em.progress(1, 2, "step", "int8")
            q = export_int8(run, self.processed_dir(run=run))
        em.progress(1, 1, "step", "done")
        return ExportResult(Path(rep["onnx"]), rep["bytes"], rep["opset"], rep["max_abs_diff"],
                            rep["parity_tol"], rep["parity_ok"], q)

    def predict_overrides(self) -> dict[str, Any]:
        """The ``preprocess.*`` settings set on this lab explicitly (``--set``, ``overrides``):
        prediction uses them instead of the model's recorded ones, and says so."""
        return {k: getattr(self.cfg.preprocess, k) for k in self._explicit_preprocess}

    def predict(self, file: str | Path, model: str | Path, callbacks: Callbacks = None,
                cancel: CancelToken | None = None) -> PredictResult:
        """Verdict for one image or video. ``model``: a checkpoint, an ONNX file, a fuse run
        (visual, forensic and fused), a forensic run, or a train run (see :meth:`model_for`)."""
        res = self.predict_batch([file], model, callbacks=callbacks, cancel=cancel)
        return res.results[0]

    def predict_batch(self, inputs: Sequence[str | Path], model: str | Path, faces: bool = False,
                      report: str | Path = "", callbacks: Callbacks = None,
                      cancel: CancelToken | None = None) -> BatchPredictResult:
        """Score files, folders and globs with one model load (``faces``: the inputs are face
        crops already, no detection); ``report``: write a .csv (one row per input, plus
        ``<stem>_frames.csv``) or a .json report."""
        from dflab.serve.predict import predict_many, write_batch_report

        model = Path(model)
        if model.is_dir() and (model / "checkpoints").is_dir():
            model = self.model_for(model)
        e = self.cfg.eval
        t0 = time.perf_counter()
        results, bundle = predict_many(inputs, model, faces, self.predict_overrides(),
                                       e.aggregate, e.confident_margin,
                                       e.threshold if e.threshold >= 0 else None,
                                       callbacks, cancel)
        written = write_batch_report(results, bundle, report) if report else []
        return BatchPredictResult(tuple(PredictResult(r) for r in results), bundle,
                                  tuple(written), time.perf_counter() - t0)

    def explain(self, inputs: Sequence[str | Path], run: str | Path, out: str | Path = "",
                method: str = "gradcam", faces: bool = False, max_frames: int = 8,
                checkpoint: str = "best.pt", callbacks: Callbacks = None,
                cancel: CancelToken | None = None) -> ExplainResult:
        """Grad-CAM (or Grad-CAM++) overlays of the visual model of ``run`` (a train run, or a
        fuse run: its visual run) on images, videos or face crops; default folder
        ``<run>/explain``."""
        from dflab.analysis.explain import explain_files

        run = Path(run)
        if (run / "fuser.json").is_file():
            from dflab.serve.bundle import sibling_run

            meta = read_json(run / "fuser.json")
            run, checkpoint = sibling_run(meta["visual_run"], run), meta.get("checkpoint",
                                                                          checkpoint)
        ckpt = run / "checkpoints" / checkpoint
        if not ckpt.is_file():
            raise FileNotFoundError(f"'{run}' has no checkpoint {checkpoint}; explain needs a "
                                    f"trained visual run (runs/train-<name>)")
        out = Path(out) if out else run / "explain"
        rows = explain_files(inputs, ckpt, out, method, faces, max_frames,
                             self.predict_overrides(), callbacks, cancel)
        return ExplainResult(out, method, tuple(rows))

    def robustness(self, run: str | Path, processed: str | Path = "", split: str = "test",
                   perturbations: Sequence[str] = (), frames_per_video: int = 4,
                   callbacks: Callbacks = None,
                   cancel: CancelToken | None = None) -> RobustnessResult:
        """AUC of the run's models (fuse run: visual, forensic and fused) on ``split`` under JPEG
        re-compression, blur, down-scaling and noise (:mod:`dflab.analysis.robustness`); writes
        ``robustness_<split>.json`` and ``.csv`` into the run folder."""
        import pandas as pd

        from dflab.analysis.robustness import format_robustness, robustness_curves

        run = Path(run)
        rows = robustness_curves(run, self.processed_dir(processed, run), split,
                                 list(perturbations) or None, frames_per_video,
                                 self.cfg.eval.aggregate, self.cfg.eval.bootstrap,
                                 self.cfg.env.seed, callbacks, cancel)
        report = write_json(run / f"robustness_{split}.json", rows)
        pd.DataFrame(rows).to_csv(run / f"robustness_{split}.csv", index=False)
        return RobustnessResult(run, tuple(rows), report, format_robustness(rows))

    def protocol(self, kind: str, name: str = "", processed: str | Path = "",
                 test_on: Sequence[str | Path] = (), methods: Sequence[str] = (),
                 callbacks: Callbacks = None,
                 cancel: CancelToken | None = None) -> ProtocolResult:
        """A generalisation protocol (cross-method, leave-one-out, cross-dataset), one train run
        per cell with this lab's settings; re-run with the same ``name`` to resume
        (:mod:`dflab.analysis.protocol`)."""
        from dflab.analysis.protocol import format_protocol, run_protocol

        report = run_protocol(self, kind, name, processed, test_on, methods, callbacks, cancel)
        return ProtocolResult(report, self.paths["runs"] / f"protocol-{report['name']}"
                              / "protocol.json", f"{format_protocol(report, 'video')}\n\n"
                              f"{format_protocol(report, 'frame')}")

    # forensic model and fusion ---------------------------------------------------------------
    def feature_subset(self) -> list[str] | None:
        """The features of ``features.subset`` (a name saved by :meth:`refine_features`, or a
        JSON file), or None for every feature."""
        from dflab.forensic.refine import load_subset

        return load_subset(self.cfg.features.subset, self.paths["data_root"])

    def features(self, processed: str | Path = "", callbacks: Callbacks = None,
                 cancel: CancelToken | None = None,
                 names: list[str] | None = None) -> FeaturesResult:
        """The forensic features of every crop (cached per crop) -> features.csv; ``names``
        (default: ``features.subset``'s, else all): only those, and only their families run."""
        from dflab.forensic.features import feature_names
        from dflab.forensic.model import compute_features

        self._check_cluster()
        names = names or self.feature_subset()
        folder = self.processed_dir(processed)
        with writing(folder, "forensic features", "features"):
            path = compute_features(folder, self.cfg, callbacks=callbacks, cancel=cancel,
                                    names=names)
        return FeaturesResult(Path(path), tuple(names or feature_names()))

    def refine_features(self, run: str | Path, name: str = "refined", direction: str = "forward",
                        max_steps: int = 12, tolerance: float = 0.005, pick: int = -1,
                        folds: int = 5, callbacks: Callbacks = None,
                        cancel: CancelToken | None = None) -> RefineResult:
        """Feature-set refinement over a forensic run's folder (:mod:`dflab.forensic.refine`): family
        costs, a forward/backward selection by cross-validated video AUC, the Pareto front of
        AUC against ms per crop. Saves the chosen point (``pick``: another point's index) as
        ``<data_root>/feature_sets/<name>.json`` and the report as ``<run>/refine.json``."""
        import numpy as np

        from dflab.forensic.model import permutation_importance_table, shap_values
        from dflab.forensic.refine import format_refine, refine_features

        run = Path(run)
        processed = self.processed_dir(run=run)
        # importance on the validation split, so nothing here reads test
        importance: dict[str, dict[str, float]] = {}
        try:
            perm = permutation_importance_table(run, processed, "val", 3, self.cfg.env.seed)
            sv, _, shap_names = shap_values(run, processed, "val", n=40, background=30,
                                            seed=self.cfg.env.seed)
            importance = {"permutation": dict(zip(perm["feature"], perm["importance"])),
                          "shap": dict(zip(shap_names, np.abs(sv).mean(0).tolist()))}
        except ValueError as exc:  # e.g. a validation split with one class
            log.warning("refine: no importance per family (%s)", exc)
        report = refine_features(processed, importance, self.cfg.features.crop_size,
                                 direction, max_steps, folds, tolerance, 30, self.cfg.env.seed,
                                 callbacks, cancel)
        write_json(run / "refine.json", report)
        subset = self.save_feature_subset(run, report["chosen"] if pick < 0 else pick, name)
        report = read_json(run / "refine.json")
        return RefineResult(run / "refine.json", subset, report, format_refine(report))

    def save_feature_subset(self, run: str | Path, point: int, name: str = "refined") -> Path:
        """Save point ``point`` of a run's refine.json (e.g. another point of the front) as the
        named subset, and mark it chosen in the report."""
        from dflab.forensic.refine import SUBSET_DIR, save_subset

        path = Path(run) / "refine.json"
        if not path.is_file():
            raise FileNotFoundError(f"'{run}' has no refine.json; run `dflab forensic refine "
                                    f"--run {run}` first")
        report = read_json(path)
        if not 0 <= point < len(report["points"]):
            raise ValueError(f"point {point}: the report has points 0..."
                             f"{len(report['points']) - 1}")
        report["chosen"] = point
        write_json(path, report)
        return save_subset(self.paths["data_root"] / SUBSET_DIR / f"{name}.json", name, report,
                           point)

    def train_forensic(self, processed: str | Path = "", name: str = "",
                       importance: bool = False, callbacks: Callbacks = None,
                       cancel: CancelToken | None = None) -> EvalResult:
        """The MLP (and a logistic baseline) on the features; threshold tuned on val, both
        evaluated on test. ``importance``: also permutation importance on test."""
        from dflab.forensic.model import permutation_importance_table, train_forensic

        processed = self.processed_dir(processed)
        run = train_forensic(self.cfg, processed, self.paths["runs"], name, callbacks=callbacks,
                             cancel=cancel, names=self.feature_subset())
        extra = ""
        if importance:
            table = permutation_importance_table(run, processed)
            table.to_csv(run / "permutation_importance.csv", index=False)
            extra = "top features by permutation importance (drop in ROC-AUC):\n" + "\n".join(
                f"  {r.feature:<24} {r.importance:.4f} ± {r.std:.4f}"
                for r in table.head(10).itertuples())
        return EvalResult(run, "test", read_report(run), extra)

    def fuse(self, run: str | Path, forensic: str | Path = "", processed: str | Path = "",
             name: str = "", checkpoint: str = "best.pt", callbacks: Callbacks = None,
             cancel: CancelToken | None = None, sync: str | Path = "") -> EvalResult:
        """The fused verdict: a logistic stacker on val over the visual run, the forensic run
        (default: the newest) and the audio statistics; visual, forensic and fused on test.
        ``sync``: a sync run, whose scores join the stacker for clips with sync windows."""
        from dflab.serve.fuse import fuse_runs

        if not forensic:
            found = self.runs("forensic")
            if not found:
                raise ValueError("no forensic run to fuse with: train the forensic MLP first "
                                 "(`dflab train-forensic`)")
            forensic = found[0]
        out = fuse_runs(self.cfg, run, forensic, self.processed_dir(processed, run),
                        self.paths["runs"], name, checkpoint, callbacks=callbacks, cancel=cancel,
                        sync_run=sync)
        return EvalResult(out, "test", read_report(out),
                          f"predict with all three: dflab predict VIDEO --model {out}")

    # audio-visual sync ---------------------------------------------------------------------
    def demo_av_data(self, out: str | Path = "", n_identities: int = 0,
                     callbacks: Callbacks = None,
                     cancel: CancelToken | None = None) -> DemoDataResult:
        """The talking demo set (per identity a real clip in sync, an AudioShift and an
        AudioSwap fake; 16 identities unless ``n_identities``) under ``<data_root>/demo_av``."""
        from dflab.data.synthetic import AV_IDENTITIES, DEMO_SEED, build_talking_dataset

        labels = build_talking_dataset(out or self.paths["data_root"] / "demo_av",
                                       n_identities or AV_IDENTITIES, seed=DEMO_SEED,
                                       workers=self.cfg.preprocess.workers, callbacks=callbacks,
                                       cancel=cancel)
        return DemoDataResult(Path(labels), sum(1 for _ in open(labels)) - 1)

    def talking_lab(self) -> "Lab":
        """This lab with sync windows on (``preprocess.sync_frames`` at least 5): the settings
        the talking set is preprocessed and its sync model trained with."""
        return self.derive({"preprocess.sync_frames": max(self.cfg.preprocess.sync_frames, 5)})

    def talking_set(self, callbacks: Callbacks = None,
                    cancel: CancelToken | None = None) -> PreprocessResult:
        """The talking demo set (:meth:`demo_av_data`) preprocessed with its sync windows
        (:meth:`talking_lab`) into ``<data_root>/processed/demo_av``."""
        labels = self.demo_av_data(callbacks=callbacks, cancel=cancel).labels
        return self.talking_lab().preprocess("demo", labels.parent,
                                             out=self.paths["processed"] / "demo_av",
                                             callbacks=callbacks, cancel=cancel)

    def _sync_settings(self) -> PreprocessConfig:
        pp = self.preprocess_settings()
        if pp.sync_frames <= 0:
            pp = dataclasses.replace(pp, sync_frames=5)
        return pp

    def sync_extract(self, processed: str | Path = "", callbacks: Callbacks = None,
                     cancel: CancelToken | None = None) -> SyncExtractResult:
        """Sync windows (mouth crops + MFCC, ``sync.npz``) for every finished video with audio
        of a processed folder (``preprocess.sync_frames``, 5 when it is 0); resumable."""
        from dflab.data.sync_windows import extract_sync

        processed = self.processed_dir(processed)
        # the windows live beside the crops that preprocessing writes: one writer of either
        with writing(processed, "sync windows", "shard-0-of-1", shards_overlap):
            return SyncExtractResult(processed, extract_sync(
                processed, self._sync_settings(), callbacks=callbacks, cancel=cancel))

    def sync_train(self, processed: str | Path = "", name: str = "", callbacks: Callbacks = None,
                   cancel: CancelToken | None = None, train_uids: list[str] | None = None,
                   val_uids: list[str] | None = None) -> SyncTrainResult:
        """The SyncNet-style model on the real train clips' windows (no labels needed), the
        epoch picked on the real val clips (or on the clips ``train_uids`` and ``val_uids``
        name, e.g. folds by identity)."""
        from dflab.av.sync import train_sync

        processed = self.processed_dir(processed)
        run = train_sync(self.cfg, processed, self.paths["runs"], name, callbacks, cancel,
                         train_uids, val_uids)
        return SyncTrainResult(run, read_json(run / "sync_summary.json"))

    def sync_score(self, run: str | Path, processed: str | Path = "", split: str = "test",
                   shifts: str | Path = "", callbacks: Callbacks = None,
                   cancel: CancelToken | None = None) -> SyncScoreResult:
        """Offsets, confidences and sync scores of every clip of ``split`` (learned model and
        baseline) and the AUC of each fake method's windows against the real ones'. ``shifts``:
        a JSON file of true offsets (path in the labels -> seconds, as the talking demo set's
        ``shifts.json``) to report offset errors."""
        from dflab.av.sync import format_sync_report, score_sync

        processed = self.processed_dir(processed, run)
        truth = _shifts_by_uid(Path(shifts), processed) if shifts else None
        report = score_sync(run, processed, split, self.cfg.eval.bootstrap, self.cfg.env.seed,
                            truth, callbacks, cancel)
        return SyncScoreResult(Path(run), report, format_sync_report(report))

    # weights, faces, demo --------------------------------------------------------------------
    def fetch_weights(self, backbone: str, to: str | Path) -> WeightsResult:
        """Download a backbone's pretrained weights into a folder (needs internet once)."""
        from dflab.visual.models import fetch_weights, hub_id

        if not to:
            raise ValueError("fetching weights needs --to DIR, the folder to keep them in")
        path = fetch_weights(backbone, to)
        return WeightsResult(backbone, path, (
            f"{backbone} ({hub_id(backbone) or 'timm release'}) -> {path}\nuse them offline "
            f"with: --set model.backbone={backbone} model.pretrained=true "
            f"model.weights_path={to}"))

    def check_weights(self, backbone: str, where: str | Path = "") -> WeightsResult:
        """Load a backbone's weights from a file or folder (default model.weights_path)."""
        from dflab.visual.models import create_model, resolve_weights

        where = where or self.cfg.model.weights_path
        if not where:
            raise ValueError("checking weights needs a folder (--to DIR) or model.weights_path")
        path = resolve_weights(backbone, where)
        create_model(ModelConfig(backbone=backbone, pretrained=True, weights_path=str(where)))
        return WeightsResult(backbone, path, f"{backbone}: loaded {path} offline")

    def finetune_faces(self, images: str | Path, out: str | Path, base: str = "yolov8n.yaml",
                       epochs: int = 30, imgsz: int = 320, batch: int = 16,
                       labeler: str = "yunet", max_images: int = 2000) -> WeightsResult:
        """Train a YOLO face detector on images labelled by ``labeler``."""
        from dflab.data.faces import create_detector, finetune_yolo
        from dflab.data.sources import IMAGE_EXTS

        found = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_EXTS
                       and "crops" not in p.parts)[:max_images]
        if not found:
            raise FileNotFoundError(f"no images under '{images}'")
        pp = self.cfg.preprocess
        det = create_detector(labeler, pp.detector_weights, pp.det_size, pp.min_confidence,
                              cache_dir=str(self.paths["cache"]))
        best = finetune_yolo(found, out, det, base, epochs, imgsz, batch, seed=self.cfg.env.seed)
        return WeightsResult("yolo", Path(best), (
            f"trained on {len(found)} images; weights: {best}\nuse them with: --set "
            f"preprocess.detector=yolo preprocess.detector_weights={best}"))

    def demo(self, name: str = "", callbacks: Callbacks = None,
             cancel: CancelToken | None = None) -> DemoResult:
        """The whole pipeline on the demo set: leak check, preprocess, train, evaluate,
        features, forensic MLP, fuse, export, predict on a held-out clip."""
        from dflab.workflows.demo import format_demo_report, run_demo

        report = run_demo(self, name, callbacks, cancel)
        return DemoResult(report, format_demo_report(report))

    def real(self, shared: str | Path, name: str = "", epochs: int = 4, photos: int = 3000,
             callbacks: Callbacks = None, cancel: CancelToken | None = None) -> DemoResult:
        """Real data (:mod:`dflab.workflows.real`): FF++ and DFDC clips split by identity pair, face
        photos; the SBI network and the forensic MLP on real faces only, an ordinary network on
        FF++ fakes, the fused verdict; frame and video AUC per method with intervals."""
        from dflab.workflows.real import format_real_report, run_real

        report = run_real(self, shared, name, epochs, photos=photos, callbacks=callbacks,
                          cancel=cancel)
        return DemoResult(report, format_real_report(report))


def _shifts_by_uid(path: Path, processed: Path) -> dict[str, float]:
    """{uid: seconds} from a JSON file of {path as listed in the labels: seconds}, matched
    through the processed folder's meta.json records."""
    if not path.is_file():
        raise FileNotFoundError(f"shifts file '{path}' does not exist; give a JSON file of "
                                f"{{video path: offset in seconds}}")
    given = read_json(path)
    out = {}
    for meta_path in (processed / "videos").rglob("meta.json"):
        rec = read_json(meta_path)["record"]
        for key in (rec["path"], *(k for k in given if rec["path"].endswith("/" + k))):
            if key in given:
                out[meta_path.parent.relative_to(processed / "videos").as_posix()] = given[key]
                break
    return out

"""ONNX export with a dynamic batch axis, checked by ``onnx.checker`` and against PyTorch with
onnxruntime; preprocessing facts travel inside the file as metadata."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dflab.core.config import ExportConfig
from dflab.core.files import disk_full, free_mib, reading, sha256_file, write_json
from dflab.core.runs import run_info
from dflab.data.faces import PACKAGED_YUNET, locate_weights
from dflab.serve.bundle import (DETECTOR_DIR, crops_to_batch, load_visual, parse_onnx_metadata,
                                run_threshold)
from dflab.visual.models import CLASS_NAMES

log = logging.getLogger(__name__)

#: the steps export_onnx reports: checkpoint loaded, ONNX written, in place, parity checked
EXPORT_STEPS = 4

__all__ = ["export_onnx", "export_int8", "onnx_metadata", "bundle_preprocess"]


def export_onnx(run: str | Path, out: str | Path = "", cfg: ExportConfig | None = None,
                checkpoint: str = "best.pt", threshold: float | None = None,
                parity_batch: int = 4, seed: int = 0,
                progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Export ``run``'s checkpoint to ONNX; returns a report with the parity check.
    ``progress(done, total, what)`` is called after each of its steps.

    Raises when torch and onnxruntime disagree by more than ``cfg.parity_tol``; the file is kept
    for inspection but the report says it failed.
    """
    # Long on purpose: the export's steps in order (load, export, check, parity, metadata), each
    # reported to the progress callback.
    import onnx
    import onnxruntime as ort

    from dflab.visual.train import load_model

    run = Path(run)
    cfg = cfg or ExportConfig()
    out = Path(out) if out else run / "model.onnx"
    step = progress or (lambda done, total, what: None)
    trained = load_model(run / "checkpoints" / checkpoint, "cpu")
    model, dc, ckpt = trained.net, trained.data_config, trained.checkpoint
    step(1, EXPORT_STEPS, "checkpoint loaded")
    if threshold is None:
        threshold = run_threshold(run / "checkpoints" / checkpoint, ckpt)
    size = dc["input_size"]
    example = torch.randn(2, 3, size, size)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if cfg.dynamic_batch else None
    out.parent.mkdir(parents=True, exist_ok=True)
    stray = out.with_name(out.name + ".data")  # the exporter's external weights file
    # one self-contained file unless protobuf's 2 GB limit forces the weights out
    inline = sum(p.numel() * p.element_size() for p in model.parameters()) < 1.8 * 2**30
    # written as <name>.part.onnx and renamed at the end: a crash or a full disk mid-export
    # never leaves a half model where an earlier export was (the external weights of a model
    # over 2 GB are written in place)
    part = out.with_name(f"{out.stem}.part{out.suffix}")
    try:
        torch.onnx.export(model, (example,), str(part), dynamo=True, input_names=["input"],
                          output_names=["logits"], dynamic_shapes=dynamic,
                          opset_version=cfg.opset, verbose=False, external_data=not inline)
        proto = onnx.load(str(part))
        meta = _metadata(dc, threshold, ckpt, size, out.parent)
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        if inline:
            onnx.save(proto, str(part))
        else:
            onnx.save(proto, str(part), save_as_external_data=True, location=stray.name)
        onnx.checker.check_model(str(part))
        step(2, EXPORT_STEPS, "ONNX written")
    except BaseException as exc:
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".data").unlink(missing_ok=True)
        if disk_full(exc, out.parent):
            raise OSError(f"could not write '{out}': the disk is full ({free_mib(out.parent):.0f} "
                          f"MiB free); an earlier export there is kept: free space and export "
                          f"again") from None
        raise
    os.replace(part, out)
    part.with_name(part.name + ".data").unlink(missing_ok=True)  # the exporter's own, if any
    if inline:
        stray.unlink(missing_ok=True)  # left by an earlier export of this run
    step(3, EXPORT_STEPS, "in place")

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(parity_batch, 3, size, size, generator=g)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    diff = float(np.abs(ref - got).max())
    odd = torch.randn(1, 3, size, size, generator=g)  # a batch size the export never saw
    with torch.no_grad():
        diff_odd = float(np.abs(model(odd).numpy() - sess.run(None, {"input": odd.numpy()})[0]).max())
    report = {"onnx": str(out), "bytes": out.stat().st_size, "opset": cfg.opset,
              "max_abs_diff": max(diff, diff_odd), "parity_tol": cfg.parity_tol,
              "parity_ok": max(diff, diff_odd) <= cfg.parity_tol, "metadata": meta,
              "checkpoint": checkpoint}
    step(4, EXPORT_STEPS, "parity checked")
    write_json(run / "export.json", report)
    if not report["parity_ok"]:
        raise ValueError(f"ONNX parity failed for '{out}': max abs difference {report['max_abs_diff']:.2e} "
                         f"> export.parity_tol {cfg.parity_tol:.0e}")
    return report


def _metadata(dc: dict, threshold: float, ckpt: dict, size: int, folder: Path) -> dict[str, str]:
    """The ONNX file's metadata: what a reader needs to feed it and read its output."""
    return {"dflab_input_size": str(size), "dflab_mean": json.dumps(dc["mean"]),
            "dflab_std": json.dumps(dc["std"]), "dflab_class_names": json.dumps(CLASS_NAMES),
            "dflab_threshold": str(threshold), "dflab_backbone": ckpt["config"]["model"]["backbone"],
            "dflab_input_layout": "float32 (N, 3, S, S) RGB, scaled to [0,1], then (x-mean)/std",
            "dflab_epoch": str(ckpt["epoch"]),
            "dflab_preprocess": json.dumps(bundle_preprocess(ckpt["config"]["preprocess"], folder))}


def bundle_preprocess(pp: dict[str, Any], run: str | Path) -> dict[str, Any]:
    """The preprocess settings as a model bundle records them: the detector by name, file name
    and SHA-256, never by path; a detector file dflab does not ship is copied into
    ``<run>/detector/`` (``run``: the folder the model is exported into) so it carries it
    (see :func:`dflab.data.faces.locate_weights`)."""
    pp = dict(pp)
    weights = pp.get("detector_weights", "")
    if not weights or weights.startswith(("http://", "https://")) or pp.get("detector") == "haar":
        if pp.get("detector") == "yunet" and not weights and not pp.get("detector_sha256"):
            pp["detector_sha256"] = sha256_file(PACKAGED_YUNET)
        return pp
    found = Path(locate_weights(pp["detector"], weights, pp.get("detector_sha256", ""),
                                [Path(run) / DETECTOR_DIR]) or PACKAGED_YUNET)
    pp["detector_sha256"] = pp.get("detector_sha256") or sha256_file(found)
    if found.resolve() != PACKAGED_YUNET.resolve():
        dest = Path(run) / DETECTOR_DIR / found.name
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found, dest)
    pp["detector_weights"] = found.name if found.resolve() != PACKAGED_YUNET.resolve() else ""
    return pp


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """dflab's metadata of an exported file, read with ``onnx`` (prediction reads it through
    onnxruntime: :func:`dflab.serve.bundle.load_visual`)."""
    import onnx
    from google.protobuf.message import DecodeError

    with reading(path, "ONNX model", "export one with `dflab export --run RUN`",
                 also=(DecodeError, onnx.checker.ValidationError)):
        proto = onnx.load(str(path), load_external_data=False)

    return parse_onnx_metadata({p.key: p.value for p in proto.metadata_props}, path)


def export_int8(run: str | Path, processed: str | Path = "", calibration: int = 128,
                seed: int = 0) -> dict[str, Any]:
    """``<run>/model.int8.onnx``: static int8 quantisation (onnxruntime's tools: QDQ format,
    per-channel int8 weights, uint8 activations, MinMax calibration) of the run's
    ``model.onnx``, calibrated on ``calibration`` training crops of ``processed`` (default: the
    folder the run was trained on). The report compares it with the float model on the test
    split: frame ROC-AUC of each, the largest and the mean |p(fake) difference| and the rank
    correlation (Spearman) of the two models' probabilities."""
    # Long on purpose: onnxruntime's quantisation steps in order (calibration reader, pre-
    # processing, quantise, parity check), each needing the previous one's files.
    import cv2
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from sklearn.metrics import roc_auc_score

    from dflab.data.datasets import load_index

    run = Path(run)
    src = run / "model.onnx"
    if not src.is_file():
        raise FileNotFoundError(f"'{src}' does not exist; export the float model first "
                                f"(`dflab export --run {run}`)")
    processed = Path(processed or run_info(run).get("processed", ""))
    df = load_index(processed)
    fp = load_visual(src)

    def batch(paths: list[str]) -> np.ndarray:
        return crops_to_batch([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths],
                              fp.input_size, fp.mean, fp.std)

    train = df[df["split"] == "train"]
    if train.empty:
        raise ValueError(f"'{processed}' has no training crops to calibrate the int8 model on")
    calib = train.sample(min(calibration, len(train)), random_state=seed)["crop_abspath"].tolist()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter([calib[k:k + 16] for k in range(0, len(calib), 16)])

        def get_next(self) -> dict | None:
            chunk = next(self.chunks, None)
            return None if chunk is None else {"input": batch(chunk)}

    out = run / "model.int8.onnx"
    pre = run / "model.pre.onnx"
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # reduce_range: 7-bit weights. On x86 CPUs with AVX2 but no VNNI (this machine, most
        # Colab hosts) onnxruntime's u8 x s8 products saturate their 16-bit sums: measured on
        # the demo's model, per-channel 8-bit weights moved test p(fake) by 0.147 on average
        # (0.47 at most; AUC 0.962 -> 0.950), 7-bit ones by 0.010 (AUC 0.963). The exported file
        # runs anywhere, so it is quantised for the CPUs that saturate.
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    finally:
        pre.unlink(missing_ok=True)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for p in onnx.load(str(src), load_external_data=False).metadata_props:
        proto.metadata_props.add(key=p.key, value=p.value)
    proto.metadata_props.add(key="dflab_quantisation", value=f"int8 static QDQ, {len(calib)} "
                             f"calibration crops")
    onnx.save(proto, str(out))
    q = load_visual(out)
    test = df[df["split"] == "test"]
    report: dict[str, Any] = {"onnx": str(out), "bytes": out.stat().st_size,
                              "float_bytes": src.stat().st_size, "calibration_crops": len(calib)}
    if not test.empty:
        paths = test["crop_abspath"].tolist()
        pf = np.concatenate([fp.probs_batch(batch(paths[k:k + 64]))
                             for k in range(0, len(paths), 64)])
        pq = np.concatenate([q.probs_batch(batch(paths[k:k + 64]))
                             for k in range(0, len(paths), 64)])
        y = test["target"].to_numpy()
        from scipy.stats import spearmanr

        report.update(test_frames=len(paths), max_abs_prob_diff=float(np.abs(pf - pq).max()),
                      mean_abs_prob_diff=float(np.abs(pf - pq).mean()),
                      prob_rank_correlation=float(spearmanr(pf, pq).statistic)
                      if np.ptp(pf) > 0 and np.ptp(pq) > 0 else float("nan"))
        if len(np.unique(y)) == 2:
            report.update(frame_auc_float=float(roc_auc_score(y, pf)),
                          frame_auc_int8=float(roc_auc_score(y, pq)))
    write_json(run / "export_int8.json", report)
    return report

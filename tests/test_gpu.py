"""The CUDA paths, wherever CUDA exists (marked ``gpu``; skipped with the reason elsewhere):
training with fp16 and bf16 AMP and its resume, YOLO on the GPU, onnxruntime's CUDA provider
(the torch features backend against NumPy on the GPU: tests/test_features.py).
``benchmarks/gpu_check.sh`` runs them with the GPU benchmarks in one go."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_training_and_its_resume_on_the_gpu(tiny_lab, amp, tmp_path):
    """Two epochs with AMP on the GPU equal one epoch, a stop, and a resume (the scaler's state
    and the RNG come back), to float tolerance."""
    from dflab.lab import Lab

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    sets = {**TINY, "env.device": "cuda", "train.amp": amp, "train.epochs": 2}
    processed = tiny_lab.processed_dir()
    whole = Lab(None, sets, data_root=tmp_path / "a").train(processed, "w").run
    Lab(None, {**sets, "train.epochs": 1}, data_root=tmp_path / "b").train(processed, "r")
    run = Lab(None, sets, data_root=tmp_path / "b").train(processed, "r", resume=True).run
    setup = json.loads((run / "train_setup.json").read_text())
    assert setup["device"].startswith("cuda") and setup["amp"] == amp
    a, b = ([json.loads(x) for x in (r / "history.jsonl").read_text().splitlines()]
            for r in (whole, run))
    assert [h["epoch"] for h in b] == [1, 2]
    assert np.allclose([h["val_loss"] for h in a], [h["val_loss"] for h in b], rtol=1e-3)


def test_yolo_runs_on_the_gpu():
    from dflab.data.faces import YoloDetector

    det = YoloDetector.__new__(YoloDetector)  # an untrained model from its yaml: no download
    from dflab.data.faces import _yolo_class

    det.model, det.device = _yolo_class()("yolov8n.yaml"), "cuda:0"
    det.det_size, det.min_confidence, det.weights = 320, 0.5, "yolov8n.yaml"
    out = det.detect_batch([np.zeros((240, 320, 3), np.uint8)] * 4)
    assert len(out) == 4 and next(det.model.model.parameters()).is_cuda


def test_onnxruntime_cuda_provider_agrees_with_torch(tiny_lab, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (the onnxruntime-gpu wheel has)")
    from dflab.serve.export import export_onnx

    run = tiny_lab.train(name="gpu-onnx").run
    ex = export_onnx(run)
    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CUDAExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    assert sess.get_providers()[0] == "CUDAExecutionProvider"
    assert ex["parity_ok"] and np.isfinite(sess.run(None, {"input": x})[0]).all()


def test_nvdec_takes_the_frames_the_cpu_takes(tmp_path):
    """preprocess.decode nvdec (torchcodec's CUDA decoder): the same frame indices as the CPU
    decoders, pixels within a few levels (NVIDIA's colour conversion is not swscale's)."""
    pytest.importorskip("torchcodec", reason="torchcodec is not installed (pip install torchcodec)")
    from test_video import write_x264

    from dflab.data.video import iter_frames_nvdec, iter_frames_skipping, resolve_decode

    assert resolve_decode("auto") == "nvdec"
    p = write_x264(tmp_path / "b.mp4", size=(256, 192))
    cpu = list(iter_frames_skipping(p, every_nth=5))
    gpu = list(iter_frames_nvdec(p, every_nth=5))
    assert [i for i, _ in gpu] == [i for i, _ in cpu]
    for (_, a), (_, b) in zip(gpu, cpu):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.abs(a.astype(int) - b).mean() < 3.0

"""End to end on real FF++ clips: video -> crops -> train (killed, resumed) -> evaluate per
method -> export ONNX -> onnxruntime agrees with torch -> predict a held-out video."""

import json

import numpy as np
import pytest

from dflab.core.config import load_config
from dflab.core.events import CancelToken, Cancelled, StepLoss
from dflab.visual.evaluate import evaluate_run
from dflab.serve.export import export_onnx
from dflab.serve.predict import predict_file
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import list_videos
from dflab.visual.train import train


@pytest.mark.slow
def test_ffpp_video_to_onnx(shared_data, yunet_weights, tmp_path):
    cfg = load_config(None, {
        "preprocess.detector": "yunet", "preprocess.detector_weights": str(yunet_weights),
        "preprocess.every_nth": 25, "preprocess.audio": False,
        "model.backbone": "test_efficientnet", "model.pretrained": False,
        "model.input_size": 64, "train.epochs": 3, "train.batch_size": 8,
        "train.accumulation": 1, "train.lr": 1e-3, "env.workers": 0,
        "env.deterministic": True})
    recs = list_videos("ffpp", shared_data / "ffpp")
    rep = preprocess_videos(recs, tmp_path / "crops", cfg.preprocess)
    assert rep["failed"] == 0 and rep["coverage"] == 1.0

    tok = CancelToken()

    def kill(event):
        if isinstance(event, StepLoss) and event.epoch == 2:
            tok.cancel()

    with pytest.raises(Cancelled):
        train(cfg, tmp_path / "crops", tmp_path / "runs", "ffpp", callbacks=[kill], cancel=tok)
    run = train(cfg, tmp_path / "crops", tmp_path / "runs", "ffpp", resume=True)
    hist = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]

    ev = evaluate_run(run, tmp_path / "crops", "test")
    # official splits: 634 and 634_660 (FaceSwap) are the test ids here
    assert set(ev["video_per_method"]) == {"FaceSwap"} and ev["video"]["n"] == 2
    assert ev["frame"]["n"] > 10

    ex = export_onnx(run)
    assert ex["max_abs_diff"] < 1e-4

    held_out = shared_data / "ffpp/manipulated_sequences/FaceSwap/c23/videos/634_660.mp4"
    a = predict_file(held_out, run / "checkpoints/best.pt", every_nth=50)
    b = predict_file(held_out, run / "model.onnx", every_nth=50)
    assert a["verdict"] in ("real", "fake") and len(a["frames"]) == 7
    assert np.allclose([f["prob"] for f in a["frames"]], [f["prob"] for f in b["frames"]],
                       atol=1e-4)

    # Grad-CAM overlays of the held-out video from the CLI, cropped as prediction crops
    import subprocess
    import sys

    import cv2

    from conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "dflab", "explain", str(held_out), "--run",
                          str(run), "--max-frames", "2", "--method", "gradcam++", "--set",
                          "preprocess.every_nth=50"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    overlays = sorted((run / "explain").glob("634_660_f*.jpg"))
    assert len(overlays) == 2 and "gradcam++: 2 overlays" in out.stdout
    img = cv2.imread(str(overlays[0]))
    assert img.shape == (64, 128, 3)  # crop | heatmap, each at the model's input size

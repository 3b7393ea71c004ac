"""One-call inference on one image or one video, with a torch checkpoint or an exported ONNX file:
detect faces, crop as in preprocessing, score every sampled frame, aggregate, give a verdict."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import PreprocessConfig
from .sources import IMAGE_EXTS

log = logging.getLogger(__name__)

__all__ = ["Predictor", "predict_file", "predict_fused"]


class Predictor:
    """Scores face crops with a checkpoint (``.pt``) or an ONNX file (``.onnx``)."""

    def __init__(self, model_path: str | Path, device: str = "auto"):
        from .datasets import build_transforms

        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model '{self.path}' does not exist; give a checkpoint "
                                    f"(runs/train-*/checkpoints/best.pt) or an exported .onnx")
        self.preprocess = PreprocessConfig()
        if self.path.suffix == ".onnx":
            from .export import load_onnx

            from .config import config_from_dict

            self.session, dc = load_onnx(self.path)
            self.backend = "onnxruntime"
            self.threshold = dc["threshold"]
            self.preprocess = config_from_dict({"preprocess": dc["preprocess"]}).preprocess
        else:
            from .config import config_from_dict
            from .train import load_model

            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.device = torch.device(device)
            self.model, dc, ckpt = load_model(self.path, self.device)
            self.backend = "torch"
            self.preprocess = config_from_dict(ckpt["config"]).preprocess
            self.threshold = self._run_threshold(ckpt)
        self.data_config = dc
        self.transform = build_transforms(dc["input_size"], dc["mean"], dc["std"], train=False)

    def _run_threshold(self, ckpt: dict) -> float:
        ev = self.path.parent.parent / "eval_test.json"
        if ev.exists():
            return float(json.loads(ev.read_text())["visual"]["threshold"])
        return float(ckpt.get("metrics", {}).get("val_threshold", 0.5))

    def score_crops(self, crops_bgr: list[np.ndarray], jpeg_quality: int = 95) -> np.ndarray:
        """Fake probabilities for ``uint8 (H, W, 3) BGR`` crops. Each crop is JPEG-coded at the
        preprocessing quality first, as the training crops were, then turned RGB (here, once)."""
        import cv2

        if not crops_bgr:
            return np.array([])
        batch = []
        for crop in crops_bgr:
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            rgb = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            batch.append(self.transform(torch.from_numpy(rgb).permute(2, 0, 1).contiguous()))
        x = torch.stack(batch)
        if self.backend == "onnxruntime":
            logits = self.session.run(None, {"input": x.numpy()})[0]
            logits = torch.from_numpy(logits)
        else:
            with torch.no_grad():
                logits = self.model(x.to(self.device)).float().cpu()
        return torch.softmax(logits, 1)[:, 1].numpy()


def _faces(path: Path, pp: PreprocessConfig, detector: str, detector_weights: str,
           every_nth: int, num_frames: int):
    """Sample frames of an image or video and crop the primary face as preprocessing does:
    (rows with frame_index/timestamp/box/face_score, crops uint8 (H, W, 3) BGR, frames sampled,
    frame indices without a face, detector name)."""
    from .faces import create_detector, crop_face
    from .preprocess import sample_frames

    det = create_detector(detector or pp.detector, detector_weights or pp.detector_weights,
                          pp.det_size, pp.min_confidence,
                          sha256="" if detector_weights else pp.detector_sha256)
    _, fps, sampled = sample_frames(path, every_nth or (0 if num_frames else pp.every_nth),
                                    num_frames or pp.num_frames)
    frames = [(i, f) for i, f in sampled if f is not None]
    if not frames:
        raise ValueError(f"'{path}' gave no decodable frames")
    found = det.detect_batch([f for _, f in frames])
    crops, rows, missing = [], [], []
    for (idx, frame), faces in zip(frames, found):
        if not faces:
            missing.append(idx)
            continue
        crop, cbox = crop_face(frame, faces[0].box, pp.padding, pp.square)
        crops.append(crop)
        rows.append({"frame_index": idx, "timestamp": round(idx / fps, 3),
                     "box": [round(v, 1) for v in faces[0].box],
                     "face_score": round(faces[0].score, 4)})
    return rows, crops, len(frames), missing, det.name


def _start(path: Path, pred: "Predictor", model: str | Path, threshold: float, detector: str,
           detector_weights: str, every_nth: int, num_frames: int
           ) -> tuple[list[dict], np.ndarray | None, list[np.ndarray], dict[str, Any]]:
    """(frame rows, the visual model's fake probabilities, face crops, the result so far) for
    ``path``; with no face the probabilities are None and the result is final."""
    rows, crops, n_sampled, missing, det_name = _faces(path, pred.preprocess, detector,
                                                       detector_weights, every_nth, num_frames)
    result: dict[str, Any] = {"file": str(path), "model": str(model), "backend": pred.backend,
                              "detector": det_name, "threshold": threshold,
                              "frames_sampled": n_sampled, "frames_without_face": missing}
    if not crops:
        result.update(verdict="no face found", probability=None, frames=[])
        return rows, None, crops, result
    return rows, pred.score_crops(crops, pred.preprocess.jpeg_quality), crops, result


def _video_prob(probs: np.ndarray, name: str, aggregate: str, margin: float) -> float:
    import pandas as pd

    from .metrics import aggregate_videos

    frame_df = pd.DataFrame({"dataset": "", "method": "", "compression": "", "video_id": name,
                             "uid": name, "target": 0, "label": "", "split": "", "prob": probs})
    return float(aggregate_videos(frame_df, aggregate, margin)["prob"].iloc[0])


def predict_file(path: str | Path, model_path: str | Path, detector: str = "",
                 detector_weights: str = "", every_nth: int = 0, num_frames: int = 0,
                 aggregate: str = "mean", margin: float = 0.3, threshold: float | None = None,
                 predictor: Predictor | None = None) -> dict[str, Any]:
    """Verdict for one image or video. Detector and sampling default to the training run's
    preprocessing settings (a checkpoint) or dflab's defaults (an ONNX file).

    ``model_path``: a checkpoint, an exported ONNX file, or a fuse run folder (``dflab fuse``):
    then the visual, forensic and fused probabilities are all given and the verdict is the fused
    model's."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"'{path}' does not exist")
    if Path(model_path).is_dir():
        return predict_fused(path, model_path, detector, detector_weights, every_nth,
                             num_frames, aggregate, margin, threshold)
    pred = predictor or Predictor(model_path)
    thr = pred.threshold if threshold is None else threshold
    rows, probs, crops, result = _start(path, pred, pred.path, thr, detector, detector_weights,
                                        every_nth, num_frames)
    if probs is None:
        return result
    for r, p in zip(rows, probs):
        r["prob"] = round(float(p), 5)
    prob = _video_prob(probs, path.stem, aggregate, margin)
    result.update(verdict="fake" if prob >= thr else "real", probability=round(prob, 5),
                  aggregate=aggregate, frames=rows)
    return result


def predict_fused(path: str | Path, fuse_run: str | Path, detector: str = "",
                  detector_weights: str = "", every_nth: int = 0, num_frames: int = 0,
                  aggregate: str = "mean", margin: float = 0.3,
                  threshold: float | None = None) -> dict[str, Any]:
    """Visual, forensic and fused verdicts for one image or video with a fuse run: the visual
    model (the run's ONNX export when there is one, else its checkpoint), the forensic MLP on
    the same crops, and the audio statistics around each frame when the file has audio."""
    import cv2
    import pandas as pd

    from .config import load_config
    from .features import extract_features
    from .forensic import load_forensic
    from .fuse import Fuser

    path = Path(path)
    fuser, meta = Fuser.load(fuse_run)
    vrun, frun = Path(meta["visual_run"]), Path(meta["forensic_run"])
    onnx = vrun / "model.onnx"
    pred = Predictor(onnx if onnx.exists() else vrun / "checkpoints" / meta["checkpoint"])
    mlp, _, _ = load_forensic(frun)
    pp, thr = pred.preprocess, fuser.threshold if threshold is None else threshold
    rows, p_vis, crops, result = _start(path, pred, fuse_run, thr, detector, detector_weights,
                                        every_nth, num_frames)
    if p_vis is None:
        return result
    crop_size = load_config(frun / "config.yaml").features.crop_size
    feats = []
    for crop in crops:  # the features were computed on saved JPEG crops: code them alike
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, pp.jpeg_quality])
        feats.append(extract_features(cv2.imdecode(buf, cv2.IMREAD_COLOR), crop_size))
    p_for = mlp.fake_prob(np.array(feats))
    table = pd.DataFrame({"prob_visual": p_vis, "prob_forensic": p_for, "has_audio": False})
    audio = _file_audio(path, [r["timestamp"] for r in rows], pp)
    if audio is not None:
        for k in ("rms", "centroid", "bandwidth", "zcr"):
            table[f"audio_{k}"] = audio[k]
        table["has_audio"] = audio["valid"]
    p_fused = fuser.predict(table)
    for r, a, b, c in zip(rows, p_vis, p_for, p_fused):
        r.update(prob_visual=round(float(a), 5), prob_forensic=round(float(b), 5),
                 prob=round(float(c), 5))
    probs = {m: _video_prob(v, path.stem, aggregate, margin)
             for m, v in (("visual", p_vis), ("forensic", p_for), ("fused", p_fused))}
    result.update(verdict="fake" if probs["fused"] >= thr else "real",
                  probability=round(probs["fused"], 5),
                  probabilities={m: round(v, 5) for m, v in probs.items()},
                  has_audio=audio is not None, aggregate=aggregate, frames=rows)
    return result


def _file_audio(path: Path, timestamps: list[float], pp: PreprocessConfig) -> dict | None:
    """The preprocessing audio statistics around each timestamp, or None without an audio track."""
    import tempfile

    from .audio import extract_wav, frame_audio_features, has_audio

    if path.suffix.lower() in IMAGE_EXTS or not pp.audio or not has_audio(path):
        return None
    with tempfile.TemporaryDirectory() as td:
        wav = extract_wav(path, Path(td) / "audio.wav")
        return frame_audio_features(wav, np.array(timestamps), pp.audio_window_s, pp.n_mfcc)

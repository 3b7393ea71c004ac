"""Face detectors (a registry), crops, and YOLO face fine-tuning.

Registered detectors (``dflab detectors``):

- ``haar``: OpenCV's Haar cascades (frontal, then profile), shipped inside the opencv-python 4.x
  wheel: the offline default that works straight after install with no download. It is the weakest
  of the three: frontal faces only, boxes loosely fitted, no landmarks; see docs/preprocessing.md for its
  measured coverage.
- ``yunet``: OpenCV ``cv2.FaceDetectorYN`` with a YuNet ONNX file (config path, the cache, or a
  download from OpenCV's model zoo checked against its SHA-256). Box, five landmarks, score.
- ``yolo``: an ultralytics YOLO face model (path or URL), batched, on GPU when present. Train one
  with :func:`finetune_yolo` (``dflab faces finetune``).
- ``auto``: yolo if weights are configured, else yunet if a YuNet file is found, else haar.

All detectors take ``uint8 (H, W, 3) BGR`` frames, detect at a working resolution whose longest side
is ``det_size``, and return boxes in the frame's own pixel coordinates.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from dflab.core.config import PreprocessConfig
from dflab.core.environment import default_cache, kept_environ
from dflab.core.files import sha256_file
from dflab.core.registry import Registry
from dflab.data.landmarks import aligned_crop, check_points, five_of_68

_PP = PreprocessConfig()  # the detector defaults live in the config, once

log = logging.getLogger(__name__)

__all__ = ["Face", "FaceDetector", "DETECTORS", "create_detector", "crop_box", "crop_face", "cut_primary",
           "primary_face", "implausible", "locate_weights", "resolve_yunet_weights",
           "download_file", "finetune_yolo", "YUNET_URL", "YUNET_SHA256"]

DETECTORS: Registry = Registry("face detector")

YUNET_URL = ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
             "face_detection_yunet_2023mar.onnx")
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    score: float
    landmarks: list[list[float]] | None = None  # [[x, y], ...] (eyes, nose, mouth corners)

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = [round(float(v), 1) for v in self.box]
        d["score"] = round(float(self.score), 4)
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
        return d

    @staticmethod
    def from_dict(d: dict) -> "Face":
        return Face(tuple(d["box"]), d["score"], d.get("landmarks"))


#: a face box is (width / height) within these: YuNet and YOLO faces are about 0.75-0.9, Haar's
#: square; a torso, an arm or a doorway found by a weak detector usually is not
FACE_ASPECT = (0.45, 1.6)


def implausible(face: Face, shape: tuple) -> str:
    """Why ``face`` is not a plausible face in a frame of ``shape`` (H, W, ...), or "".

    Checks written here because no library has them: the box's aspect ratio; with landmarks
    (YuNet, YOLO-face), that all five lie in the box (10% slack), the eyes above the mouth and
    apart by at least a sixth of the box width; the box not taller than the frame itself.
    """
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return "empty box"
    if not FACE_ASPECT[0] <= w / h <= FACE_ASPECT[1]:
        return f"aspect ratio {w / h:.2f} outside {FACE_ASPECT}"
    if h > 0.98 * shape[0] and w > 0.98 * shape[1]:
        return "box covers the whole frame"
    lm = face.landmarks
    if lm and len(lm) >= 5:
        sx, sy = 0.1 * w, 0.1 * h
        if any(not (x1 - sx <= x <= x2 + sx and y1 - sy <= y <= y2 + sy) for x, y in lm[:5]):
            return "landmarks outside the box"
        (rx, ry), (lx, ly), _, (mrx, mry), (mlx, mly) = lm[:5]
        if max(ry, ly) >= min(mry, mly):
            return "eyes not above the mouth"
        if abs(lx - rx) < w / 6:
            return "eyes too close together"
    return ""


def _below(big: Face, small: Face) -> bool:
    """``big`` starts below the middle of ``small`` and spans its centre: a body under a head."""
    cx, cy = (small.box[0] + small.box[2]) / 2, (small.box[1] + small.box[3]) / 2
    return big.box[1] >= cy and big.box[0] <= cx <= big.box[2]


def primary_face(faces: Sequence[Face], shape: tuple) -> Face | None:
    """The face a crop is cut around: the largest plausible one (see :func:`implausible`) that
    is not below a smaller plausible face (a torso under a head, as a weak detector finds it),
    so a larger false box is not chosen over a real face; None when none is plausible."""
    ok = [f for f in sorted(faces, key=lambda f: f.area, reverse=True)
          if not implausible(f, shape)]
    for k, face in enumerate(ok):
        if not any(_below(face, smaller) for smaller in ok[k + 1:]):
            return face
    return None


class FaceDetector:
    """Base class: subclasses implement ``_detect(small_frame)`` at the working resolution."""

    name = "base"

    def __init__(self, det_size: int = _PP.det_size, min_confidence: float = _PP.min_confidence):
        self.det_size = det_size
        self.min_confidence = min_confidence

    def _scale(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        h, w = frame.shape[:2]
        s = min(1.0, self.det_size / max(h, w))
        if s < 1.0:
            frame = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))),
                               interpolation=cv2.INTER_AREA)
        return frame, s

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in one ``uint8 (H, W, 3) BGR`` frame, largest first."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        out = []
        for frame in frames:
            small, s = self._scale(frame)
            faces = [_rescale(f, 1 / s, frame.shape) for f in self._detect(small)
                     if f.score >= self.min_confidence]
            out.append(sorted(faces, key=lambda f: f.area, reverse=True))
        return out

    def _detect(self, frame: np.ndarray) -> list[Face]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "det_size": self.det_size,
                "min_confidence": self.min_confidence}


def _rescale(face: Face, k: float, shape: tuple) -> Face:
    h, w = shape[:2]
    x1, y1, x2, y2 = (v * k for v in face.box)
    box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
    lm = [[x * k, y * k] for x, y in face.landmarks] if face.landmarks is not None else None
    return Face(box, face.score, lm)


class HaarDetector(FaceDetector):
    name = "haar"

    def __init__(self, det_size: int = _PP.det_size,
                 min_confidence: float = _PP.min_confidence, **_: Any):
        import cv2

        super().__init__(det_size, min_confidence)
        root = getattr(getattr(cv2, "data", None), "haarcascades", "")
        frontal = os.path.join(root, "haarcascade_frontalface_default.xml")
        profile = os.path.join(root, "haarcascade_profileface.xml")
        if not root or not os.path.exists(frontal):
            raise FileNotFoundError(
                "this OpenCV build ships no Haar cascades (OpenCV 5 wheels do not); install "
                "opencv-python<5, or use detector 'yunet' with a YuNet file")
        self.frontal = cv2.CascadeClassifier(frontal)
        self.profile = cv2.CascadeClassifier(profile) if os.path.exists(profile) else None

    def _run(self, cascade, gray: np.ndarray, flip: bool = False) -> list[Face]:
        if flip:
            gray = gray[:, ::-1].copy()
        min_side = max(24, min(gray.shape) // 12)
        boxes, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                      minSize=(min_side, min_side),
                                                      outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(boxes, np.ravel(weights)):
            if flip:
                x = gray.shape[1] - x - w
            # the final stage's margin, squashed to (0, 1): Haar has no calibrated probability
            score = 1.0 / (1.0 + math.exp(-float(wt)))
            faces.append(Face((float(x), float(y), float(x + w), float(y + h)), score))
        return faces

    def _detect(self, frame: np.ndarray) -> list[Face]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        faces = self._run(self.frontal, gray)
        if not faces and self.profile is not None:
            faces = self._run(self.profile, gray) or self._run(self.profile, gray, flip=True)
        return faces


def download_file(url: str, dest: Path, sha256: str = "", timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` through a ``.part`` file; check the SHA-256 when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as fh:
            shutil.copyfileobj(resp, fh)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(f"could not download {url} ({exc}); download it by hand and set "
                      f"preprocess.detector_weights to its path") from exc
    if sha256:
        got = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if got != sha256:
            tmp.unlink(missing_ok=True)
            raise OSError(f"checksum mismatch for {url}: got {got}, expected {sha256}; the file "
                          f"was not kept")
    os.replace(tmp, dest)
    return dest


def fetch_weights_file(weights: str, sha256: str = "", cache_dir: str | Path = "") -> Path:
    """A detector weights file: a path (its SHA-256 checked when given), or a URL downloaded
    once into ``<cache>/detectors/`` and checked."""
    if weights.startswith(("http://", "https://")):
        dest = Path(cache_dir or default_cache()) / "detectors" / Path(weights.split("?")[0]).name
        if not dest.is_file():
            download_file(weights, dest, sha256)
        path = dest
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"detector weights '{weights}' not found; give an existing "
                                    f"file or a URL in preprocess.detector_weights")
    if sha256:
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != sha256.lower():
            raise ValueError(f"detector weights '{path}' have SHA-256 {got}, not the expected "
                             f"{sha256} (preprocess.detector_sha256); the file is another model "
                             f"or damaged")
    return path


def weights_search_dirs(cache_dir: str | Path = "") -> list[Path]:
    """Where :func:`locate_weights` looks for a detector file by its hash: the packaged
    weights, then the cache's detectors/ and yunet/ folders."""
    cache = Path(cache_dir) if cache_dir else default_cache()
    return [PACKAGED_YUNET.parent, cache / "detectors", cache / "yunet"]


def locate_weights(name: str, weights: str, sha256: str, search: Sequence[str | Path] = ()
                   ) -> str:
    """The detector weights to load on this machine, for a model that recorded ``name``,
    ``weights`` (a path, a file name or a URL; "" for yunet: the packaged file) and the file's
    ``sha256``: the recorded path when it exists and matches; else, by hash, a file in
    ``search`` folders (a run's detector/ folder first) or the defaults of
    :func:`weights_search_dirs`. Returns "" for a detector without weights (haar) or for the
    packaged YuNet. Raises one FileNotFoundError naming the hash and how to supply the file."""
    if name == "haar" or (not weights and not sha256):
        return weights
    if weights.startswith(("http://", "https://")):
        return weights  # fetched into the cache and checked against sha256 when loaded
    given = Path(weights).expanduser() if weights else None
    if given is not None and given.is_file() and (not sha256 or sha256_file(given) == sha256):
        return str(given)
    if not weights and sha256 == sha256_file(PACKAGED_YUNET):
        return ""
    if sha256:
        for folder in [*map(Path, search), *weights_search_dirs()]:
            if not folder.is_dir():
                continue
            candidates = sorted(folder.iterdir(), key=lambda p: (given is None or
                                                                 p.name != given.name, p.name))
            for cand in candidates:
                if cand.is_file() and cand.suffix in (".onnx", ".pt") and \
                        sha256_file(cand) == sha256:
                    return str(cand)
    label = given.name if given is not None else "the packaged YuNet file"
    raise FileNotFoundError(
        f"the model's {name} detector weights ({label}, SHA-256 {sha256[:16]}...) are not on "
        f"this machine; copy the file into the run's detector/ folder or "
        f"{weights_search_dirs()[1]}, or give it with --set preprocess.detector_weights=PATH")


#: YuNet ships inside the package (Apache-2.0; see dflab/weights/README.md): no download
PACKAGED_YUNET = Path(__file__).parents[1] / "weights" / "face_detection_yunet_2023mar.onnx"


def resolve_yunet_weights(weights: str = "", cache_dir: str | Path = "", download: bool = True,
                          url: str = YUNET_URL, sha256: str = YUNET_SHA256) -> Path | None:
    """A YuNet ONNX file: the given path; empty: the packaged file; a URL: the cache, else a
    download (if ``download``)."""
    if not weights and PACKAGED_YUNET.is_file():
        return PACKAGED_YUNET
    if weights:
        p = Path(weights).expanduser()
        if p.is_file():
            return p
        if not weights.startswith(("http://", "https://")):
            raise FileNotFoundError(f"YuNet weights '{weights}' not found; give an existing .onnx "
                                    f"file or leave preprocess.detector_weights empty (the YuNet "
                                    f"file shipped with dflab)")
        url, sha256 = weights, ""
    cache = Path(cache_dir) if cache_dir else default_cache()
    cached = cache / "yunet" / Path(url).name
    if cached.is_file():
        return cached
    if not download:
        return None
    return download_file(url, cached, sha256)


class YuNetDetector(FaceDetector):
    name = "yunet"

    def __init__(self, weights: str = "", det_size: int = _PP.det_size,
                 min_confidence: float = _PP.min_confidence,
                 cache_dir: str = "", download: bool = True, **_: Any):
        import cv2

        super().__init__(det_size, min_confidence)
        self.weights = resolve_yunet_weights(weights, cache_dir, download)
        if self.weights is None:
            raise FileNotFoundError("no YuNet weights: set preprocess.detector_weights")
        try:
            self.net = cv2.FaceDetectorYN.create(str(self.weights), "", (320, 320),
                                                 min(0.3, min_confidence), 0.3, 5000)
        except cv2.error as exc:
            raise ValueError(f"OpenCV cannot load YuNet file '{self.weights}' ({exc}); use a "
                             f"fixed-size yunet_*.onnx (the *_dynamic.onnx files do not load)") \
                from None

    def _detect(self, frame: np.ndarray) -> list[Face]:
        h, w = frame.shape[:2]
        self.net.setInputSize((w, h))
        _, rows = self.net.detect(np.ascontiguousarray(frame))
        faces = []
        for r in rows if rows is not None else []:
            x, y, bw, bh = (float(v) for v in r[:4])
            lm = [[float(r[4 + 2 * k]), float(r[5 + 2 * k])] for k in range(5)]
            faces.append(Face((x, y, x + bw, y + bh), float(r[14]), lm))
        return faces

    def describe(self) -> dict:
        return {**super().describe(), "weights": str(self.weights)}


@contextmanager
def _own_threads() -> Iterator[None]:
    """Undo what ultralytics does to this process: on import it sets OMP_NUM_THREADS=1 and
    NUMEXPR_MAX_THREADS in ``os.environ`` (inherited by every process started later: a training
    subprocess then ran torch on one core) and turns OpenCV's threads off; on every CPU
    predict or train it calls ``torch.set_num_threads(cpu_count - 1)`` (1 on 2 cores: a model
    trained later in the same notebook ran on one core). All three are put back on exit."""
    import cv2
    import torch

    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    try:
        with kept_environ():
            yield
    finally:
        cv2.setNumThreads(cv_threads)
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def _yolo_class():
    """``ultralytics.YOLO``, imported without its side effects (see :func:`_own_threads`)."""
    with _own_threads():
        from ultralytics import YOLO
    return YOLO


class YoloDetector(FaceDetector):
    name = "yolo"

    def __init__(self, weights: str = "", det_size: int = _PP.det_size,
                 min_confidence: float = _PP.min_confidence,
                 device: str = "auto", sha256: str = "", cache_dir: str = "", **_: Any):
        super().__init__(det_size, min_confidence)
        if not weights:
            raise ValueError("detector 'yolo' needs a face weights file or URL in "
                             "preprocess.detector_weights (train one with `dflab faces finetune`, "
                             "or see docs/preprocessing.md for a public WIDER FACE model)")
        YOLO = _yolo_class()
        weights = str(fetch_weights_file(weights, sha256, cache_dir))
        self.weights = weights
        self.model = YOLO(weights)
        if device == "auto":
            import torch

            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.device = device

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        if not frames:
            return []
        with _own_threads():
            results = self.model.predict(list(frames), imgsz=self.det_size,
                                         conf=self.min_confidence, device=self.device,
                                         verbose=False)
        out = []
        for res in results:
            faces = []
            boxes = res.boxes
            kpts = getattr(res, "keypoints", None)
            for k in range(len(boxes)):
                x1, y1, x2, y2 = (float(v) for v in boxes.xyxy[k].tolist())
                lm = kpts.xy[k].tolist() if kpts is not None and kpts.xy is not None else None
                faces.append(Face((x1, y1, x2, y2), float(boxes.conf[k]), lm))
            out.append(sorted(faces, key=lambda f: f.area, reverse=True))
        return out

    def describe(self) -> dict:
        return {**super().describe(), "weights": str(self.weights), "device": self.device}


@DETECTORS.register("haar", help="OpenCV Haar cascades: offline default, no download, weakest")
def create_haar(**kw: Any) -> FaceDetector:
    return HaarDetector(**kw)


@DETECTORS.register("yunet", help="OpenCV YuNet (cv2.FaceDetectorYN): box, 5 landmarks, score")
def create_yunet(**kw: Any) -> FaceDetector:
    return YuNetDetector(**kw)


@DETECTORS.register("yolo", help="ultralytics YOLO face model, batched, GPU when present")
def create_yolo(**kw: Any) -> FaceDetector:
    return YoloDetector(**kw)


def resolve_auto(name: str, weights: str = "", cache_dir: str | Path = "") -> tuple[str, str]:
    """(detector, weights) that ``name`` stands for: any name but ``auto`` as given; ``auto``
    is yolo for a .pt file, else yunet (the given file, or the packaged one: weights ""), else,
    only when OpenCV has no YuNet, haar."""
    import cv2

    if name != "auto":
        return name, weights
    if weights.endswith(".pt"):
        return "yolo", weights
    if hasattr(cv2, "FaceDetectorYN"):
        if weights:
            resolve_yunet_weights(weights, cache_dir, download=False)  # a wrong path: say so
        return "yunet", weights
    log.warning("auto detector: this OpenCV has no FaceDetectorYN; using the Haar cascades")
    return "haar", ""


@DETECTORS.register("auto", help="yolo if weights given (.pt), else yunet if a file is found, else haar")
def create_auto(weights: str = "", cache_dir: str = "", **kw: Any) -> FaceDetector:
    name, weights = resolve_auto("auto", weights, cache_dir)
    return DETECTORS.create(name, weights=weights, cache_dir=cache_dir, **kw)


def create_detector(name: str = "auto", weights: str = "", det_size: int = _PP.det_size,
                    min_confidence: float = _PP.min_confidence, **kw: Any) -> FaceDetector:
    return DETECTORS.create(name, weights=weights, det_size=det_size,
                            min_confidence=min_confidence, **kw)


def crop_box(box: Sequence[float], shape: tuple, padding: float = 0.3, square: bool = True
             ) -> tuple[int, int, int, int]:
    """The crop rectangle around a face: ``padding`` times the box size on each side (context for
    blending edges), optionally squared on the longer side, clipped to the frame."""
    h, w = shape[:2]
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    pw, ph = bw * (1 + 2 * padding), bh * (1 + 2 * padding)
    if square:
        pw = ph = max(pw, ph)
    nx1, ny1 = int(round(max(0, cx - pw / 2))), int(round(max(0, cy - ph / 2)))
    nx2, ny2 = int(round(min(w, cx + pw / 2))), int(round(min(h, cy + ph / 2)))
    return nx1, ny1, max(nx1 + 1, nx2), max(ny1 + 1, ny2)


def crop_face(frame: np.ndarray, box: Sequence[float], padding: float = 0.3, square: bool = True
              ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    x1, y1, x2, y2 = crop_box(box, frame.shape, padding, square)
    return frame[y1:y2, x1:x2], (x1, y1, x2, y2)


def cut_primary(frame: np.ndarray, face: Face, pp: PreprocessConfig, landmarker: Any = None
                ) -> tuple[np.ndarray, dict]:
    """The crop of a frame's primary face and its per-frame record, as preprocessing and
    prediction both make them: the face (box, score, five points), its 68 landmarks in frame
    pixels when ``landmarker`` is given and the fit passes :func:`~dflab.data.landmarks.check_points`
    (else the reason), and the crop: padded box, or aligned on the template when
    ``pp.align`` and the face has points (``crop_affine``: the frame -> crop matrix)."""
    primary = face.to_dict()
    points = None
    if landmarker is not None:
        points = landmarker.predict(frame, face.box, face.landmarks)
        why = check_points(points, face.box, face.landmarks) if points is not None else \
            "no five points to fit the template to"
        if why:
            primary["landmarks68_reason"], points = why, None
        else:
            primary["landmarks68"] = np.round(points, 1).tolist()
            primary["landmarks68_model"] = landmarker.name
    cbox = crop_box(face.box, frame.shape, pp.padding, pp.square)
    five = five_of_68(points) if points is not None else face.landmarks
    if pp.align and five is not None and len(five) >= 5:
        x1, y1, x2, y2 = face.box
        side = max(2, int(round(max(x2 - x1, y2 - y1) * (1 + 2 * pp.padding))))
        crop, primary["crop_affine"] = aligned_crop(frame, five, side)
    else:
        crop = frame[cbox[1]:cbox[3], cbox[0]:cbox[2]]
    primary["crop_box"] = list(cbox)
    return crop, primary


def finetune_yolo(images: Sequence[str | Path], out_dir: str | Path, labeler: FaceDetector,
                  base: str = "yolov8n.yaml", epochs: int = 30, imgsz: int = 320,
                  batch: int = 16, device: str = "auto", val_fraction: float = 0.2,
                  seed: int = 0, **train_kwargs: Any) -> Path:
    """Fine-tune (or train) a one-class YOLO face detector on ``images`` auto-labelled by
    ``labeler`` (YuNet recommended). ``base``: a model yaml (from scratch, no download), a local
    ``.pt``, or an ultralytics name such as ``yolov8n.pt`` (downloaded by ultralytics).
    ``train_kwargs`` go to ultralytics' ``train`` (e.g. ``mosaic=0.0`` for small datasets).

    Returns the path of the best weights. Images with no face become background examples.
    """
    import cv2

    YOLO = _yolo_class()
    out_dir = Path(out_dir).resolve()
    ds = out_dir / "dataset"
    rng = np.random.default_rng(seed)
    images = [Path(p) for p in images]
    if len(images) < 4:
        raise ValueError(f"finetune_yolo needs at least 4 images, got {len(images)}")
    order = rng.permutation(len(images))
    n_val = max(1, int(len(images) * val_fraction))
    n_faces = 0
    for rank, idx in enumerate(order):
        split = "val" if rank < n_val else "train"
        src = images[idx]
        img = cv2.imread(str(src))
        if img is None:
            log.warning("finetune_yolo: cannot read %s; skipped", src)
            continue
        h, w = img.shape[:2]
        (ds / "images" / split).mkdir(parents=True, exist_ok=True)
        (ds / "labels" / split).mkdir(parents=True, exist_ok=True)
        name = f"{rank:06d}{src.suffix.lower()}"
        shutil.copyfile(src, ds / "images" / split / name)
        lines = []
        for f in labeler.detect(img):
            x1, y1, x2, y2 = f.box
            lines.append(f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                         f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        n_faces += len(lines)
        (ds / "labels" / split / f"{rank:06d}.txt").write_text("\n".join(lines))
    if n_faces == 0:
        raise ValueError("the labeler found no face in any image; nothing to learn from")
    data_yaml = ds / "data.yaml"
    data_yaml.write_text(f"path: {ds}\ntrain: images/train\nval: images/val\nnames:\n  0: face\n")
    if device == "auto":
        import torch

        device = "0" if torch.cuda.is_available() else "cpu"
    model = YOLO(base)
    with _own_threads():
        model.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=device,
                    project=str(out_dir), name="train", exist_ok=True, plots=False, workers=0,
                    seed=seed, verbose=False, single_cls=True, pretrained=not base.endswith(".yaml"),
                    **train_kwargs)
    best = out_dir / "train" / "weights" / "best.pt"
    if not best.exists():
        best = out_dir / "train" / "weights" / "last.pt"
    return best

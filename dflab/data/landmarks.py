"""Facial landmarks (a registry): 68 points in the iBUG 300-W layout, for every detected face.

Registered landmark models (``preprocess.landmarks``):

- ``dlib68``: dlib's shape predictor with ``shape_predictor_68_face_landmarks.dat`` as the
  ``face-recognition-models`` wheel ships it (``pip install 'dflab[landmarks]'``: ``dlib-bin``, a
  prebuilt dlib, and that wheel; no compiler, no download at run time). The file is CC0; it was
  trained on iBUG 300-W, whose terms exclude commercial use: a commercial user must train their
  own. About 3 ms a face on one core.
- ``template5``: the fallback without the extra: the mean 68-point face fitted (a similarity) to
  the detector's five points (YuNet, YOLO-face). Right about the eyes, nose and mouth corners
  and only roughly elsewhere (its error is measured in ``dflab/weights/landmarks68.json``);
  enough for a hull mask or an aligned crop, not for lip contours.
- ``auto``: ``dlib68`` when the extra is installed, else ``template5`` (said once in the log).

dlib's predictor expects the box of dlib's own HOG detector. Other detectors' boxes are mapped to
it first (:func:`predictor_box`): from the five points when the detector gives them, else from
the box; the mapping was fitted on real face photos by ``benchmarks/calibrate_landmarks.py``,
which also measured how much it helps (the NME table in the JSON, quoted in docs/landmarks.md).

Points are ``float32 (68, 2)`` (x, y) in the frame's pixels. :func:`check_points` flags a fit
that disagrees with the detector's own five points.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dflab.core.files import sha256_file
from dflab.core.registry import Registry, require

log = logging.getLogger(__name__)

__all__ = ["LANDMARKS", "Landmarker", "create_landmarker", "shared_landmarker", "aligned_crop",
           "resolve_landmarks", "model_file",
           "template68", "five_of_68", "fit_similarity", "predictor_box", "check_points",
           "crop_points", "hull_mask", "TEMPLATE_FILE", "EXTRA", "LEFT_EYE", "RIGHT_EYE",
           "MOUTH_OUTER", "MOUTH_INNER", "JAW"]

LANDMARKS: Registry = Registry("landmark model")
TEMPLATE_FILE = Path(__file__).parents[1] / "weights" / "landmarks68.json"
EXTRA = "landmarks"  # pip install 'dflab[landmarks]'

# iBUG 300-W indices (image-left eye first, as dlib and YuNet both order them)
JAW = list(range(0, 17))
RIGHT_EYE = list(range(36, 42))  # image-left: the subject's right eye
LEFT_EYE = list(range(42, 48))
MOUTH_OUTER = list(range(48, 60))
MOUTH_INNER = list(range(60, 68))

#: a 68-point fit whose five points stray further than this from the detector's five (mean
#: distance over the distance between the eyes) is flagged and not stored. The two models
#: place their points differently (YuNet's eye is not the mean of dlib's six eye points): on
#: 590 held-out real photos they differ by 0.09 at the median, 0.18 at the 99th percentile and
#: 0.22 at most (landmarks68.json: five_point_agreement); 0.3 flags only fits that slid off.
MAX_FIVE_POINT_DISAGREEMENT = 0.3


@functools.lru_cache(maxsize=1)
def _calibration() -> dict:
    return json.loads(TEMPLATE_FILE.read_text())


def template68() -> np.ndarray:
    """The mean face, ``float64 (68, 2)``, eye centres at (-0.5, 0) and (0.5, 0)."""
    return np.asarray(_calibration()["template"], float)


def five_of_68(points: np.ndarray) -> np.ndarray:
    """The five points YuNet gives, taken from 68: eye centres, nose tip, mouth corners."""
    p = np.asarray(points, float)
    return np.array([p[RIGHT_EYE].mean(0), p[LEFT_EYE].mean(0), p[30], p[48], p[54]])


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) taking ``src`` to ``dst``
    (both (N, 2)), as a 2x3 matrix (scikit-image's Umeyama estimate)."""
    from skimage.transform import SimilarityTransform

    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        t = SimilarityTransform.from_estimate(src, dst)
        ok = bool(t)
    else:
        t = SimilarityTransform()
        ok = t.estimate(src, dst)
    if not ok:
        raise ValueError("cannot fit a similarity to these points (all in one place?)")
    return t.params[:2]


def _square(cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def predictor_box(box: Sequence[float], five: Sequence[Sequence[float]] | None = None,
                  detector: str = "yunet") -> tuple[float, float, float, float]:
    """The box dlib's predictor expects (its HOG detector's) for a face found by ``detector``:
    from the five points when given (eyes and mouth fix scale and centre better than any box),
    else a square fitted to ``detector``'s box (Haar has its own fit; others use YuNet's)."""
    cal = _calibration()
    if five is not None and len(five) >= 5:
        p = np.asarray(five, float)[:5]
        eyes, mouth = p[:2].mean(0), p[3:].mean(0)
        em = float(np.linalg.norm(mouth - eyes))
        if em > 1:
            f = cal["box_from_five"]
            mid = (eyes + mouth) / 2
            return _square(mid[0] + f["dx"] * em, mid[1] + f["dy"] * em, f["side"] * em)
    m = cal["box_from_box"].get(detector, cal["box_from_box"]["yunet"])
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return _square((x1 + x2) / 2 + m["dx"] * w, (y1 + y2) / 2 + m["dy"] * h, m["side"] * w)


def check_points(points: np.ndarray, box: Sequence[float],
                 five: Sequence[Sequence[float]] | None = None) -> str:
    """Why a 68-point fit is not trusted, or "": its five points against the detector's (when
    given; see :data:`MAX_FIVE_POINT_DISAGREEMENT`), else its centre outside the face box."""
    p = np.asarray(points, float)
    iod = float(np.linalg.norm(p[RIGHT_EYE].mean(0) - p[LEFT_EYE].mean(0)))
    if not np.isfinite(p).all() or iod < 1:
        return "degenerate landmark fit"
    if five is not None and len(five) >= 5:
        d = float(np.mean(np.linalg.norm(five_of_68(p) - np.asarray(five, float)[:5], axis=1)))
        if d / iod > MAX_FIVE_POINT_DISAGREEMENT:
            return (f"landmarks disagree with the detector's five points ({d / iod:.2f} of the eye "
                    f"distance > {MAX_FIVE_POINT_DISAGREEMENT})")
        return ""
    x1, y1, x2, y2 = box
    cx, cy = p.mean(0)
    if not (x1 <= cx <= x2 and y1 <= cy <= y2):
        return "landmarks centred outside the face box"
    return ""


def model_file(name: str) -> Path:
    """A model file the ``face-recognition-models`` wheel ships (found without importing the
    package, whose ``__init__`` needs setuptools' pkg_resources); a clear error naming the
    extra when it is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise ImportError(f"dlib's model file {name} is not installed; run: pip install "
                      f"'dflab[{EXTRA}]' (dlib-bin and face-recognition-models), or set "
                      f"preprocess.landmarks=template5 (five points fitted to a template)")


def dlib_available() -> bool:
    return (importlib.util.find_spec("dlib") is not None
            and importlib.util.find_spec("face_recognition_models") is not None)


class Landmarker:
    """Base class: ``predict(frame, box, five)`` -> ``float32 (68, 2)`` or None."""

    name = "base"

    def predict(self, frame: np.ndarray, box: Sequence[float],
                five: Sequence[Sequence[float]] | None = None) -> np.ndarray | None:
        raise NotImplementedError  # pragma: no cover - abstract

    def describe(self) -> dict:
        return {"name": self.name}


class Dlib68(Landmarker):
    """dlib's 68-point shape predictor on ``uint8 (H, W, 3) BGR`` or ``(H, W)`` grey frames."""

    name = "dlib68"

    def __init__(self, model_path: str = "", detector: str = "yunet", **_: Any):
        self.dlib = require("dlib", EXTRA)
        self.path = Path(model_path) if model_path else model_file(
            "shape_predictor_68_face_landmarks.dat")
        if not self.path.is_file():
            raise FileNotFoundError(f"landmark model '{self.path}' does not exist")
        self.predictor = self.dlib.shape_predictor(str(self.path))
        self.detector = detector

    def predict(self, frame, box, five=None):
        import cv2

        x1, y1, x2, y2 = (int(round(v)) for v in predictor_box(box, five, self.detector))
        # dlib reads RGB or grey; the box may leave the frame (the predictor clamps what it
        # reads)
        image = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        shape = self.predictor(image, self.dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def describe(self) -> dict:
        return {"name": self.name, "file": self.path.name, "sha256": sha256_file(self.path)}


class Template5(Landmarker):
    """The mean face fitted to the detector's five points; None for a face without them."""

    name = "template5"

    def __init__(self, **_: Any):
        self.template = template68()
        self.five = five_of_68(self.template)

    def predict(self, frame, box, five=None):
        if five is None or len(five) < 5:
            return None
        m = fit_similarity(self.five, np.asarray(five, float)[:5])
        return (self.template @ m[:, :2].T + m[:, 2]).astype(np.float32)


@LANDMARKS.register("dlib68", help="dlib's 68-point predictor (extra: landmarks; iBUG 300-W "
                    "terms: non-commercial)")
def create_dlib68(**kw: Any) -> Landmarker:
    return Dlib68(**kw)


@LANDMARKS.register("template5", help="the mean face fitted to the detector's five points "
                    "(no extra; rough away from eyes, nose and mouth corners)")
def create_template5(**kw: Any) -> Landmarker:
    return Template5(**kw)


@functools.lru_cache(maxsize=None)
def _said_once(msg: str) -> None:
    log.warning(msg)


def resolve_landmarks(name: str) -> str:
    """What ``preprocess.landmarks`` stands for here: ``auto`` is dlib68 with the extra, else
    template5; ``off`` and the others as given."""
    if name != "auto":
        return name
    if dlib_available():
        return "dlib68"
    _said_once(f"68-point landmarks need the '{EXTRA}' extra (pip install 'dflab[{EXTRA}]'); "
               f"using the 5-point template fit instead")
    return "template5"


def create_landmarker(name: str = "auto", **kw: Any) -> Landmarker | None:
    """The landmark model ``name`` stands for (None for ``off``)."""
    name = resolve_landmarks(name)
    return None if name == "off" else LANDMARKS.create(name, **kw)


@functools.lru_cache(maxsize=None)
def shared_landmarker(name: str, detector: str = "yunet") -> Landmarker | None:
    """:func:`create_landmarker`, loaded once per process (the 68-point file is 100 MB)."""
    return create_landmarker(name, detector=detector)


def crop_points(points: Sequence[Sequence[float]], primary: dict) -> np.ndarray:
    """Frame-pixel points in the crop's pixels: through the crop's affine map when the crop was
    aligned (``crop_affine``), else shifted by its box's corner."""
    p = np.asarray(points, np.float32)
    if primary.get("crop_affine"):
        m = np.asarray(primary["crop_affine"], np.float32)
        return p @ m[:, :2].T + m[:, 2]
    x1, y1 = primary["crop_box"][:2]
    return p - np.array([x1, y1], np.float32)


def hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``float32 (H, W)`` in {0, 1}: the convex hull of the points (the face region every
    face-swap blends into), filled at the given image size."""
    import cv2

    mask = np.zeros(shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(np.float32)


def _template_centre() -> np.ndarray:
    """Where the centre of dlib's HOG box sits on the template (as :func:`predictor_box` puts it
    from five points): the centre of an aligned crop."""
    t5 = five_of_68(template68())
    eyes, mouth = t5[:2].mean(0), t5[3:].mean(0)
    em = float(np.linalg.norm(mouth - eyes))
    f = _calibration()["box_from_five"]
    return (eyes + mouth) / 2 + np.array([f["dx"], f["dy"]]) * em


def aligned_crop(frame: np.ndarray, five: Sequence[Sequence[float]], side: int
                 ) -> tuple[np.ndarray, list[list[float]]]:
    """``(uint8 (side, side, 3) crop, 2x3 frame->crop matrix)``: the frame rotated and scaled so
    that the face's five points land on the template's, at the face's own scale (the crop keeps
    the pixels it would have unaligned), the face centred; outside the frame is black."""
    import cv2

    t5 = five_of_68(template68())
    five = np.asarray(five, float)[:5]
    m = fit_similarity(t5, five)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    dst = (t5 - _template_centre()) * scale + side / 2
    to_crop = fit_similarity(five, dst)
    crop = cv2.warpAffine(frame, to_crop, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)
    return crop, np.round(to_crop, 6).tolist()

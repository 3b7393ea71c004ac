"""Make ``dflab/weights/landmarks68.json``: the mean 68-point face and the box each detector's
faces are turned into before dlib's shape predictor, measured on real face photos.

dlib's 68-point predictor was trained on boxes from dlib's own HOG detector; given another
detector's box (YuNet's includes the forehead, Haar's is loose) its points drift. Here, on LFW
photos (``../shared/data/faces/lfw``, one photo per person; even rows fit, odd rows measure):

- the HOG box is the reference; its 68 points are the reference points;
- a box is derived from YuNet's five points (side and centre from the eye and mouth centres),
  from YuNet's box, and from the Haar box: a square whose side and centre are fitted (medians)
  to the HOG box;
- each is scored by the normalised mean error (NME: mean point distance over the distance
  between the eye centres) against the reference points, on the held-out half;
- the mean shape (each face similarity-aligned on its eye centres, then averaged) is the
  template of the 5-point fallback and of crop alignment;
- the fallback (template fitted to YuNet's five points) is scored the same way;
- the agreement of YuNet's five points with the same five taken from the 68 (the check that
  flags a bad fit in preprocessing) is given as percentiles: the threshold is set from them.

Run: ``.venv/bin/python benchmarks/calibrate_landmarks.py [--n 1200]``; needs the landmarks
extra and ../shared/data. Prints the table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dflab.data.faces import create_detector  # noqa: E402
from dflab.data.landmarks import (TEMPLATE_FILE, five_of_68, fit_similarity,  # noqa: E402
                             model_file)


def square(cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def main() -> None:
    import dlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", default=str(ROOT.parent / "shared" / "data" / "faces" / "lfw"))
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--out", default=str(TEMPLATE_FILE))
    args = ap.parse_args()
    files = sorted(Path(args.faces).glob("*.jpg"))[: args.n]
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    hog = dlib.get_frontal_face_detector()
    yunet, haar = create_detector("yunet"), create_detector("haar")

    def points(rgb: np.ndarray, box) -> np.ndarray:
        r = dlib.rectangle(*[int(round(v)) for v in box])
        return np.array([[p.x, p.y] for p in predictor(rgb, r).parts()], float)

    rows = []
    t0 = time.time()
    for f in files:
        # LFW faces are about 90 px; HOG finds faces from 80 px: work at twice the size
        img = cv2.resize(cv2.imread(str(f)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h = hog(rgb, 0)
        y = yunet.detect(img)
        if len(h) != 1 or not y or not y[0].landmarks:
            continue
        hb = (h[0].left(), h[0].top(), h[0].right(), h[0].bottom())
        hz = haar.detect(img)
        rows.append({"rgb": rgb, "hog": np.array(hb, float), "yunet": np.array(y[0].box),
                     "five": np.array(y[0].landmarks), "haar": np.array(hz[0].box) if hz else None,
                     "ref": points(rgb, hb)})
    print(f"{len(rows)} of {len(files)} photos with one HOG face and a YuNet face "
          f"({time.time() - t0:.0f} s)")
    fit, test = rows[0::2], rows[1::2]

    def centre_side(b):
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0] + b[3] - b[1]) / 2

    def eyes_mouth(five):
        eyes, mouth = five[:2].mean(0), five[3:].mean(0)
        return eyes, mouth, float(np.linalg.norm(mouth - eyes))

    # from YuNet's five points: side = k * eye-mouth distance, centre = mid + d * that distance
    k5, dx5, dy5 = [], [], []
    for r in fit:
        cx, cy, side = centre_side(r["hog"])
        eyes, mouth, em = eyes_mouth(r["five"])
        mid = (eyes + mouth) / 2
        k5.append(side / em)
        dx5.append((cx - mid[0]) / em)
        dy5.append((cy - mid[1]) / em)
    from_five = {"side": float(np.median(k5)), "dx": float(np.median(dx5)),
                 "dy": float(np.median(dy5))}

    def box_map(key):  # a square from another detector's box: side/width, centre shift
        s, dx, dy = [], [], []
        for r in fit:
            if r[key] is None:
                continue
            cx, cy, side = centre_side(r["hog"])
            b = r[key]
            w, h = b[2] - b[0], b[3] - b[1]
            s.append(side / w)
            dx.append((cx - (b[0] + b[2]) / 2) / w)
            dy.append((cy - (b[1] + b[3]) / 2) / h)
        return {"side": float(np.median(s)), "dx": float(np.median(dx)),
                "dy": float(np.median(dy)), "n": len(s)}

    from_box = {"yunet": box_map("yunet"), "haar": box_map("haar")}

    # the template: every fitted face's 68 points similarity-aligned on the eye centres
    aligned = []
    unit = np.array([[-0.5, 0.0], [0.5, 0.0]])  # eye centres one unit apart
    for r in fit:
        ref = r["ref"]
        eyes = np.array([ref[36:42].mean(0), ref[42:48].mean(0)])
        m = fit_similarity(eyes, unit)
        aligned.append(ref @ m[:, :2].T + m[:, 2])
    template = np.mean(aligned, axis=0)

    def box_from_five(five):
        eyes, mouth, em = eyes_mouth(five)
        mid = (eyes + mouth) / 2
        return square(mid[0] + from_five["dx"] * em, mid[1] + from_five["dy"] * em,
                      from_five["side"] * em)

    def box_from(key, b):
        p = from_box[key]
        w, h = b[2] - b[0], b[3] - b[1]
        return square((b[0] + b[2]) / 2 + p["dx"] * w, (b[1] + b[3]) / 2 + p["dy"] * h,
                      p["side"] * w)

    def nme(p, ref):
        iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
        return float(np.mean(np.linalg.norm(p - ref, axis=1)) / iod)

    errs: dict[str, list[float]] = {k: [] for k in ("yunet box as is", "yunet box mapped",
                                                    "yunet five points", "haar box mapped",
                                                    "template on five (fallback)")}
    agree = []
    for r in test:
        ref = r["ref"]
        errs["yunet box as is"].append(nme(points(r["rgb"], r["yunet"]), ref))
        errs["yunet box mapped"].append(nme(points(r["rgb"], box_from("yunet", r["yunet"])), ref))
        p5 = points(r["rgb"], box_from_five(r["five"]))
        errs["yunet five points"].append(nme(p5, ref))
        if r["haar"] is not None:
            errs["haar box mapped"].append(nme(points(r["rgb"], box_from("haar", r["haar"])), ref))
        m = fit_similarity(five_of_68(template), r["five"])
        errs["template on five (fallback)"].append(nme(template @ m[:, :2].T + m[:, 2], ref))
        iod = np.linalg.norm(p5[36:42].mean(0) - p5[42:48].mean(0))
        agree.append(float(np.mean(np.linalg.norm(five_of_68(p5) - r["five"], axis=1)) / iod))
    table = {k: {"n": len(v), "median": round(float(np.median(v)), 4),
                 "mean": round(float(np.mean(v)), 4), "p90": round(float(np.percentile(v, 90)), 4)}
             for k, v in errs.items() if v}
    print(f"NME against the points dlib finds from its own HOG box (held-out half, n = {len(test)}):")
    print(f"  {'box given to the predictor':32s} {'n':>5s} {'median':>8s} {'mean':>8s} {'p90':>8s}")
    for k, v in table.items():
        print(f"  {k:32s} {v['n']:5d} {v['median']:8.4f} {v['mean']:8.4f} {v['p90']:8.4f}")
    pct = {f"p{q}": round(float(np.percentile(agree, q)), 4) for q in (50, 90, 99, 100)}
    print(f"YuNet's five points against the same five of the 68 (NME): {pct}")
    out = {"made_by": "benchmarks/calibrate_landmarks.py", "photos": f"{args.faces} (first "
           f"{args.n}, {len(rows)} usable; even rows fit, odd rows measure)",
           "template": np.round(template, 5).tolist(), "box_from_five": from_five,
           "box_from_box": from_box, "nme_held_out": table, "five_point_agreement": pct}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

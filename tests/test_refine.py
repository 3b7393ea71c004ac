"""Forensic feature-set refinement: costs from the extraction code path, a selection scored by
video-grouped cross-validation, the Pareto front, and a saved subset that features,
train-forensic and predict all honour (computing only the families it needs)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY
from dflab.forensic.extract import extract_many
from dflab.forensic.features import (FEATURE_FAMILIES, extract_features, families_for, family_costs, feature_dict,
                            feature_names)
from dflab.forensic.refine import cv_video_auc, load_subset, pareto_front, selection_path


def _crop(seed=0, size=96):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_a_subset_computes_only_its_families_and_matches_the_full_vector(tmp_path, monkeypatch):
    names = ["noise_var_r", "fft_slope", "noise_corr_gb"]
    assert families_for(names) == ["fft", "noise"]
    img = _crop()
    full = dict(zip(feature_names(), extract_features(img)))
    assert np.allclose(extract_features(img, names=names), [full[n] for n in names])
    assert set(feature_dict(img, families=["noise"])) == set(FEATURE_FAMILIES.get("noise").names)
    with pytest.raises(ValueError, match="did you mean 'fft_slope'"):
        families_for(["fft_slop"])

    # a crop whose full vector is cached is sliced, never recomputed
    import cv2

    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), img)
    cache = tmp_path / "cache"
    whole = extract_many([str(path)], cache)
    monkeypatch.setattr("dflab.forensic.extract.extract_features",
                        lambda *a, **k: pytest.fail("recomputed a cached crop"))
    part = extract_many([str(path)], cache, names=names)
    assert np.allclose(part[0], whole[0, [feature_names().index(n) for n in names]])


def test_family_costs_time_each_family_on_the_extraction_calls():
    costs = family_costs([_crop(k, 128) for k in range(3)], repeats=1)
    assert set(costs) == {"_base", *FEATURE_FAMILIES.list()}
    assert all(v > 0 for k, v in costs.items() if k != "_base")


def test_cv_auc_is_video_grouped_and_selection_finds_the_informative_features():
    rng = np.random.default_rng(0)
    videos = np.repeat(np.arange(40), 5)
    y = (videos % 2).astype(int)
    signal = y + rng.normal(0, 0.7, len(y))
    X = np.column_stack([rng.normal(size=len(y)), signal, rng.normal(size=len(y)),
                         y + rng.normal(0, 0.7, len(y))])
    names = ["n1", "good", "n2", "good2"]
    assert cv_video_auc(X[:, [1]], y, videos) > 0.9
    assert 0.25 < cv_video_auc(X[:, [0]], y, videos) < 0.75
    path = selection_path(X, y, videos, names, "forward", max_steps=2)
    assert set(path[1]) == {"good", "good2"}
    back = selection_path(X, y, videos, names, "backward", max_steps=2)
    assert back[0] == names and len(back[-1]) == 2 and "good" in back[-1]


def test_pareto_front_keeps_only_points_nothing_beats():
    pts = [{"ms": 1, "cv_auc": 0.7}, {"ms": 2, "cv_auc": 0.9}, {"ms": 3, "cv_auc": 0.85},
           {"ms": 4, "cv_auc": 0.95}, {"ms": 2, "cv_auc": 0.8},
           {"ms": 4, "cv_auc": 0.95, "n": 9}]  # ties with #3 but has more features
    pts[3]["n"] = 6
    assert pareto_front(pts) == [0, 1, 3]


def test_unknown_subset_says_how_to_make_one(tmp_path):
    assert load_subset("", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="dflab forensic refine"):
        load_subset("fast", tmp_path)


@pytest.mark.slow
def test_refine_saves_a_subset_that_train_forensic_and_predict_use(tiny_lab):
    lab = tiny_lab
    lab.features()
    run = lab.train_forensic(name="full").run
    root = lab.paths["data_root"]
    sets = [f"{k}={v}" for k, v in TINY.items()]
    out = subprocess.run([sys.executable, "-m", "dflab", "forensic", "refine", "--run", str(run),
                          "--name", "quick", "--max-steps", "2", "--folds", "3", "--set",
                          f"env.data_root={root}", *sets],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((run / "refine.json").read_text())
    subset = json.loads((root / "feature_sets/quick.json").read_text())
    chosen = report["points"][report["chosen"]]
    assert subset["features"] == chosen["features"] and report["chosen"] in report["front"]
    assert {p["n"] for p in report["points"]} >= {1, 2, len(feature_names())}
    assert report["measured_ms"]["full"] > 0 and "Pareto front" in out.stdout
    assert set(report["family_importance"]) == {"permutation", "shap"}
    assert set(report["family_importance"]["shap"]) == set(FEATURE_FAMILIES.list())
    # a front point costs no more and scores no less than... nothing beats it
    for i in report["front"]:
        p = report["points"][i]
        assert not any(q["ms"] < p["ms"] and q["cv_auc"] > p["cv_auc"] for q in report["points"])

    lab.cfg.features.subset = "quick"
    try:
        sub_run = lab.train_forensic(name="quick").run
        from dflab.forensic.scorer import ForensicScorer

        assert ForensicScorer.load(sub_run).names == subset["features"]
        crop = next(p for p in lab.processed_dir().rglob("*.jpg") if "crops" in p.parts)
        res = lab.predict_batch([crop], sub_run, faces=True).results[0]
        assert 0 <= res.data["probability"] <= 1
    finally:
        lab.cfg.features.subset = ""

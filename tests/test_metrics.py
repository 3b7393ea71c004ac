import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dflab.core.metrics import (aggregate_videos, binary_metrics, evaluate_predictions,
                           expected_calibration_error, format_auc, grouped_metrics, roc_points,
                           tune_threshold)


def test_binary_metrics_known_values():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.35, 0.8, 0.9])
    m = binary_metrics(y, p, 0.5)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert 0 <= m["eer"] <= 0.5 and m["n_fake"] == 3
    one_class = binary_metrics([1, 1], [0.7, 0.9])
    assert np.isnan(one_class["auc"]) and one_class["accuracy"] == 1.0


def test_ece_perfect_and_overconfident():
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, y.astype(float)) == pytest.approx(0, abs=1e-9)
    assert expected_calibration_error(y, np.full(100, 0.99)) == pytest.approx(0.49, abs=1e-6)


def test_threshold_separates_shifted_scores():
    y = np.array([0] * 50 + [1] * 50)
    p = np.concatenate([np.linspace(0.6, 0.7, 50), np.linspace(0.71, 0.8, 50)])
    t = tune_threshold(y, p)
    assert 0.7 < t <= 0.71
    assert binary_metrics(y, p, t)["accuracy"] == 1.0
    assert len(roc_points(y, p)["fpr"]) > 2


def frames_table():
    rows = []
    # the same video id under two methods (FF++ uses target_source ids for every method)
    for method, probs, target in [("Deepfakes", [0.9, 0.8, 0.2], 1), ("FaceSwap", [0.4, 0.45, 0.5], 1),
                                  ("original", [0.1, 0.2, 0.95], 0)]:
        vid = "001" if method == "original" else "001_002"
        for k, pr in enumerate(probs):
            rows.append({"dataset": "ffpp", "method": method, "compression": "c23",
                         "video_id": vid, "uid": f"ffpp/{method}/c23/{vid}", "target": target,
                         "label": "fake" if target else "real", "split": "test",
                         "frame_index": k, "prob": pr})
    return pd.DataFrame(rows)


def test_video_aggregation_keeps_methods_apart():
    df = frames_table()
    v = aggregate_videos(df, "mean")
    assert len(v) == 3
    assert v.set_index("method").loc["Deepfakes", "prob"] == pytest.approx(0.6333, abs=1e-3)
    med = aggregate_videos(df, "median").set_index("method")
    assert med.loc["original", "prob"] == pytest.approx(0.2)
    conf = aggregate_videos(df, "confident", 0.3).set_index("method")
    assert conf.loc["Deepfakes", "prob"] == pytest.approx(0.85)  # 0.2 is not beyond the margin
    assert conf.loc["FaceSwap", "prob"] == pytest.approx(0.45)  # none confident: plain mean
    with pytest.raises(ValueError, match="mean, median or confident"):
        aggregate_videos(df, "max")


def test_per_method_tables_pair_each_method_with_the_reals():
    df = frames_table()
    per = grouped_metrics(df, "method", 0.5)
    assert set(per) == {"Deepfakes", "FaceSwap"}
    assert per["Deepfakes"]["n"] == 6 and per["Deepfakes"]["n_real"] == 3
    rep = evaluate_predictions(df, 0.5)
    for key in ("frame", "video", "frame_per_method", "video_per_method",
                "frame_per_compression", "roc_frame"):
        assert key in rep
    assert rep["video"]["n"] == 3


def test_weighted_auc_equals_sklearn_on_explicit_resamples():
    from sklearn.metrics import roc_auc_score

    from dflab.core.metrics import weighted_auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) + 0.4 * y, 1)  # rounded: many ties
    W = rng.integers(0, 4, (6, 300)).astype(float)
    want = [roc_auc_score(np.repeat(y, W[r].astype(int)), np.repeat(p, W[r].astype(int)))
            for r in range(6)]
    np.testing.assert_allclose(weighted_auc(y, p, W), want, rtol=1e-12)


def test_bootstrap_interval_resamples_videos_not_frames():
    from dflab.core.metrics import bootstrap_auc_ci

    rng = np.random.default_rng(0)
    y_vid = np.array([0] * 8 + [1] * 24)
    p_vid = rng.random(32) + 0.5 * y_vid
    # ten identical frames per video: no more information than one frame per video
    y, p, g = np.repeat(y_vid, 10), np.repeat(p_vid, 10), np.repeat(np.arange(32), 10)
    by_video = bootstrap_auc_ci(y_vid, p_vid, np.arange(32), 2000, seed=3)
    clustered = bootstrap_auc_ci(y, p, g, 2000, seed=3)
    naive = bootstrap_auc_ci(y, p, None, 2000, seed=3)  # frames as if independent
    np.testing.assert_allclose(clustered, by_video)
    assert (naive[1] - naive[0]) < 0.6 * (clustered[1] - clustered[0])
    lo, hi = clustered
    assert 0 < lo < hi <= 1
    # fewer than two videos in a class: no interval rather than a made-up one
    assert np.isnan(bootstrap_auc_ci([0, 1, 1], [0.1, 0.8, 0.9], [0, 1, 2])).all()


def test_reports_carry_counts_and_intervals():
    rng = np.random.default_rng(0)
    rows = []
    for v in range(20):
        label = int(v >= 5)
        for _ in range(4):
            rows.append({"uid": f"d/m{label}/c/{v}", "dataset": "d", "compression": "c",
                         "method": "FaceSwap" if label else "original", "video_id": str(v),
                         "label": ["real", "fake"][label], "target": label, "split": "test",
                         "prob": float(np.clip(0.3 + 0.3 * label + 0.3 * rng.random(), 0, 1))})
    rep = evaluate_predictions(pd.DataFrame(rows), 0.5, n_boot=500)
    assert rep["frame"]["n_frames"] == 80 and rep["frame"]["n_videos"] == 20
    assert rep["video"]["n_videos"] == 20 and rep["video"]["n_frames"] == 80
    for block in (rep["frame"], rep["video"], rep["video_per_method"]["FaceSwap"]):
        lo, hi = block["auc_ci"]
        assert lo <= block["auc"] <= hi
    assert rep["bootstrap"] == {"resamples": 500, "level": 0.95, "unit": "video", "seed": 0}
    assert "[" in format_auc(rep["frame"])


def test_operating_points_read_off_the_roc_curve():
    # 10 reals, 10 fakes: one real scores 0.9 (above 8 fakes), the rest of the reals below 0.3
    y = np.array([0] * 10 + [1] * 10)
    p = np.array([0.9] + [0.1 + 0.02 * k for k in range(9)] + [0.95, 0.92] + [0.5 + 0.03 * k
                                                                              for k in range(8)])
    ops = binary_metrics(y, p)["operating_points"]
    # FPR <= 1%: no real may pass, so the threshold sits above 0.9: the two fakes above it
    assert ops["fpr_0.01"] == {"tpr": 0.2, "fpr": 0.0, "threshold": 0.92}
    # FPR <= 10%: the one real at 0.9 may pass: every fake is above 0.26
    assert ops["fpr_0.1"]["tpr"] == 1.0 and ops["fpr_0.1"]["fpr"] == 0.1
    t = ops["fpr_0.1"]["threshold"]
    assert ((p >= t) & (y == 0)).mean() * 2 <= 0.1 and ((p >= t) & (y == 1)).sum() == 10
    assert binary_metrics(np.ones(4), np.full(4, 0.7))["operating_points"] == {}


def test_paired_bootstrap_difference_of_two_models():
    from dflab.core.metrics import bootstrap_auc_difference

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    groups = np.arange(120) // 3  # 40 videos of 3 frames
    good = y + rng.normal(0, 0.6, 120)
    noise = rng.normal(0, 1, 120)
    d = bootstrap_auc_difference(y, good, noise, groups, n_boot=500)
    assert d["difference"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, noise))
    assert d["ci"][0] > 0  # a real model beats noise, beyond doubt
    same = bootstrap_auc_difference(y, good, good + 1e-9 * noise, groups, n_boot=500)
    assert same["ci"][0] <= 0 <= same["ci"][1]  # a model is not told apart from itself

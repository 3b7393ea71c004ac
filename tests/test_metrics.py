import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dflab.metrics import (aggregate_videos, binary_metrics, evaluate_predictions,
                           expected_calibration_error, grouped_metrics, roc_points,
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

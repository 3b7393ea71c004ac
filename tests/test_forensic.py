import json

import numpy as np
import pandas as pd
import pytest

from dflab.core.config import load_config
from dflab.forensic.features import feature_names
from dflab.forensic.model import (compute_features, image_explorer, load_features,
                            permutation_importance_table, plot_correlation, plot_histograms,
                            plot_importance, plot_shap_summary, shap_values,
                            train_forensic)
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import list_videos


@pytest.fixture(scope="module")
def forensic_run(demo_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("fpp")
    cfg = load_config(None, {"preprocess.detector": "haar", "preprocess.every_nth": 3,
                             "preprocess.audio": False, "features.epochs": 60})
    preprocess_videos(list_videos("demo", demo_set), out, cfg.preprocess)
    compute_features(out, cfg)
    run = train_forensic(cfg, out, out / "runs", "t")
    return out, run


def test_features_table(forensic_run):
    out, _ = forensic_run
    df, names = load_features(out)
    assert names == feature_names() and len(df) == 150
    assert np.isfinite(df[names].to_numpy()).all()
    assert {"uid", "method", "split", "target"} <= set(df.columns)


def test_mlp_and_baseline_reports(forensic_run):
    _, run = forensic_run
    rep = json.loads((run / "eval_test.json").read_text())
    assert set(rep) == {"mlp", "logreg"}
    from sklearn.metrics import roc_auc_score

    for label, r in rep.items():
        assert r["video"]["n"] == 10
        assert set(r["video_per_method"]) == {"FaceSwap", "Deepfakes", "Face2Face",
                                              "NeuralTextures"}
        # the report is the AUC of the predictions written beside it, frame and video
        preds = pd.read_csv(run / f"predictions_test_{label}.csv", dtype={"video_id": str})
        assert r["frame"]["auc"] == pytest.approx(roc_auc_score(preds["target"], preds["prob"]))
        videos = preds.groupby("uid").agg(target=("target", "first"), prob=("prob", "mean"))
        assert r["video"]["auc"] == pytest.approx(roc_auc_score(videos["target"], videos["prob"]))
        # and the forensic features of the demo's artefacts carry signal at all
        assert r["frame"]["auc"] > 0.6, r["frame"]
    assert (run / "forensic_mlp.pt").exists() and (run / "predictions_test_mlp.csv").exists()


@pytest.mark.slow
def test_explanations(forensic_run):
    out, run = forensic_run
    imp = permutation_importance_table(run, out, repeats=2)
    assert list(imp.columns) == ["feature", "importance", "std"] and len(imp) == len(feature_names())
    assert imp["importance"].is_monotonic_decreasing
    sv, X, names = shap_values(run, out, n=10, background=10)
    assert sv.shape == X.shape == (10, len(names))
    assert np.isfinite(sv).all() and np.abs(sv).sum() > 0
    for fig in (plot_histograms(out, names[:2]), plot_histograms(out, names[:1], by_method=True),
                plot_correlation(out), plot_importance(imp), plot_shap_summary(sv, X, names)):
        assert fig.data


def test_image_explorer_figures():
    from dflab.data.synthetic import _source_photo

    img = _source_photo()[40:296, 100:356]
    figs = image_explorer(img, real_profile=np.zeros(32))
    assert set(figs) == {"spectrum", "profile", "dct_coefficients", "dct_block_energy",
                         "residual", "residual_hist"}
    assert len(figs["profile"].data) == 2
    assert np.asarray(figs["dct_coefficients"].data[0].z).shape == (8, 8)


def test_missing_features_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dflab features"):
        load_features(tmp_path)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "features.csv", index=False)
    with pytest.raises(ValueError, match="feature version"):
        load_features(tmp_path)

"""The fused verdict's stacker: fitted on validation scores, calibrated, saved without pickle."""

import numpy as np
import pandas as pd
import pytest

from dflab.serve.fuse import FUSE_INPUTS, Fuser
from dflab.core.files import write_json


def _scores(n_videos: int, seed: int) -> pd.DataFrame:
    """Two complementary noisy detectors: 'visual' sees method A, 'forensic' method B."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        kind = ["real", "A", "B"][v % 3]
        y = int(kind != "real")
        for f in range(5):
            pv = 0.8 if kind == "A" else 0.3
            pf = 0.8 if kind == "B" else 0.3
            rows.append({"uid": f"v{v}", "frame_index": f, "target": y,
                         "prob_visual": float(np.clip(pv + 0.15 * rng.standard_normal(), .01, .99)),
                         "prob_forensic": float(np.clip(pf + 0.15 * rng.standard_normal(), .01, .99)),
                         "has_audio": bool(v % 2), "audio_rms": float(rng.random()),
                         "audio_centroid": float(1000 * rng.random()),
                         "audio_bandwidth": float(800 * rng.random()),
                         "audio_zcr": float(rng.random() / 10)})
    return pd.DataFrame(rows)


def test_fused_beats_each_input_and_is_calibrated():
    from sklearn.metrics import roc_auc_score

    val, test = _scores(60, 0), _scores(60, 1)
    fuser = Fuser.fit(val)
    p = fuser.predict(test)
    auc = {m: roc_auc_score(test["target"], test[f"prob_{m}"]) for m in ("visual", "forensic")}
    assert roc_auc_score(test["target"], p) > max(auc.values()) + 0.05, auc
    # calibrated: the mean predicted probability matches the fake rate on held-out data
    assert abs(p.mean() - test["target"].mean()) < 0.08
    assert 0 < fuser.threshold < 1


def test_audio_is_ignored_where_a_clip_has_none():
    val = _scores(60, 0)
    fuser = Fuser.fit(val)
    row = val.iloc[[1]].copy()
    row["has_audio"] = False
    changed = row.copy()
    changed[["audio_rms", "audio_centroid", "audio_bandwidth", "audio_zcr"]] = 123.0
    assert fuser.predict(row) == pytest.approx(fuser.predict(changed))
    no_audio_cols = row[["prob_visual", "prob_forensic"]]
    assert fuser.predict(no_audio_cols) == pytest.approx(fuser.predict(row))


def test_round_trip_through_json(tmp_path):
    fuser = Fuser.fit(_scores(30, 0))
    write_json(tmp_path / "fuser.json", {"inputs": FUSE_INPUTS, "fuser": fuser.to_dict()})
    loaded = Fuser.load(tmp_path)
    test = _scores(30, 2)
    np.testing.assert_allclose(loaded.predict(test), fuser.predict(test))
    write_json(tmp_path / "fuser.json", {"inputs": ["other"], "fuser": fuser.to_dict()})
    with pytest.raises(ValueError, match="re-run `dflab fuse`"):
        Fuser.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a fuse run"):
        Fuser.load(tmp_path / "nope")


def test_one_class_validation_is_a_clear_error():
    val = _scores(30, 0)
    with pytest.raises(ValueError, match="one class only"):
        Fuser.fit(val[val["target"] == 1])

"""A detached job's return value (``result.json``): every Lab result type comes back as it went
in, and reading a result never runs code (a planted pickle is never opened; unknown types are
refused)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dflab.core import results
from dflab.core.jobs import Job, result_from_json, result_to_json


def _done_job(folder: Path) -> Job:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").write_text(json.dumps({"state": "done", "pid": 0}))
    return Job(folder)


def test_results_come_back_with_their_types(tmp_path):
    made = [
        results.TrainResult(tmp_path / "runs" / "train-a", 3, 0.41, 5, True, 12.5),
        results.PreprocessResult(tmp_path / "p", "demo", 4, 3, 1, 0, 90, 0.99, "haar",
                                 {"a.mp4": "why"}, {"frames": 90, "per_split": {"test": 2}}),
        results.EvalResult(tmp_path / "r", "test", {"visual": {
            "frame": {"auc": np.float64(0.75), "auc_ci": (0.5, 0.9), "nan": float("nan")},
            "n": np.int64(7)}}),
        results.ExplainResult(tmp_path / "x", "gradcam", ({"file": "a.jpg", "prob": 0.2},)),
    ]
    for k, res in enumerate(made):
        result_to_json(res, tmp_path / f"{k}.json")
        back = result_from_json(tmp_path / f"{k}.json")
        assert type(back) is type(res)
        for name in res.__dataclass_fields__:
            a, b = getattr(res, name), getattr(back, name)
            assert type(a) is type(b) or isinstance(a, (np.generic, dict)), (name, a, b)
    ev = result_from_json(tmp_path / "2.json").reports["visual"]
    assert ev["frame"]["auc"] == 0.75 and ev["frame"]["auc_ci"] == (0.5, 0.9) and ev["n"] == 7
    assert math.isnan(ev["frame"]["nan"])
    assert result_from_json(tmp_path / "3.json").rows[0]["file"] == "a.jpg"
    assert not list(tmp_path.glob("*.part"))  # written atomically


def test_a_planted_pickle_is_never_opened_and_unknown_types_are_refused(tmp_path):
    import pickle

    job = _done_job(tmp_path / "job")
    marker = tmp_path / "ran"

    class Payload:  # unpickling this would create the marker file
        def __reduce__(self):
            return (Path.touch, (marker,))

    (job.folder / "result.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(RuntimeError, match="has no result"):
        job.result()
    assert not marker.exists()
    for bad in ('{"__result__": "Path", "x": 1}', '{"__result__": "system"}', '{"a": '):
        (job.folder / "result.json").write_text(bad)
        with pytest.raises(ValueError, match="result.json' is damaged"):
            job.result()
    with pytest.raises(TypeError, match="cannot keep"):
        result_to_json(results.DemoResult({"f": object()}, ""), tmp_path / "x.json")

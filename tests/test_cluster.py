"""Preprocessing and feature extraction on a Dask cluster (a 2-worker LocalCluster here) give the
same index, meta.json files and features as one machine; a bad video is one failed item."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from dflab.data.cluster import check_address
from dflab.core.config import load_config
from dflab.forensic.extract import extract_many
from dflab.data.preprocess import preprocess_videos
from dflab.data.sources import list_videos

pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")


def test_scheduler_addresses_are_checked():
    assert check_address("local:2") == "local:2"
    assert check_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="tcp://HOST:8786"):
        check_address("10.0.0.5")


@pytest.mark.slow
def test_cluster_output_equals_one_machine(tmp_path, demo_set):
    cfg = load_config(None, {"preprocess.every_nth": 10, "preprocess.audio": False})
    recs = list_videos("demo", demo_set)[:6]
    bad = tmp_path / "zero.mp4"
    bad.write_bytes(b"")
    recs.append(dataclasses.replace(recs[0], path=str(bad), video_id="zero"))
    one = preprocess_videos(recs, tmp_path / "one", cfg.preprocess)
    environ = dict(os.environ)
    many = preprocess_videos(recs, tmp_path / "many", cfg.preprocess, cluster="local:2")
    # Dask's pre-spawn variables (OMP_NUM_THREADS=1...) do not stay in this process: they
    # made every later subprocess of the test session run torch on one thread
    assert dict(os.environ) == environ
    assert one["failed"] == many["failed"] == 1
    assert "is empty" in many["errors"][recs[-1].uid]
    a = pd.read_csv(tmp_path / "one" / "index.csv").sort_values(["uid", "frame_index"])
    b = pd.read_csv(tmp_path / "many" / "index.csv").sort_values(["uid", "frame_index"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    for m in (tmp_path / "one").glob("videos/**/meta.json"):
        x = json.loads(m.read_text())
        y = json.loads((tmp_path / "many" / m.relative_to(tmp_path / "one")).read_text())
        for meta in (x, y):
            meta["summary"].pop("seconds")
        assert x["frames"] == y["frames"] and x["summary"] == y["summary"]

    crops = sorted(str(p) for p in (tmp_path / "one").glob("videos/**/crops/*.jpg"))
    local = extract_many(crops)
    shutil.rmtree(tmp_path / "many")
    seen = []
    remote = extract_many(crops, tmp_path / "cache", cluster="local:2",
                          progress=lambda d, n: seen.append((d, n)))
    np.testing.assert_array_equal(local, remote)
    assert seen[-1] == (len(crops), len(crops))

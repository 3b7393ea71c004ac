import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from dflab.core.config import PreprocessConfig
from dflab.core.events import CancelToken, Cancelled, LogCallback, Progress
from dflab.data.preprocess import (INDEX_COLUMNS, build_index, parse_shard, preprocess_videos,
                              select_shard, video_dir)
from dflab.data.sources import VideoRecord, list_videos
from dflab.data.stats import dataset_stats, plot_stats
from test_video import write_video


def cfg(**kw):
    base = dict(detector="haar", every_nth=5, audio=True, det_size=320)
    base.update(kw)
    return PreprocessConfig(**base)


@pytest.fixture(scope="module")
def demo_processed(demo_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("pp")
    recs = list_videos("demo", demo_set)
    report = preprocess_videos(recs, out, cfg())
    return out, recs, report


def test_demo_end_to_end(demo_processed):
    out, recs, report = demo_processed
    assert report["processed"] == 30 and report["failed"] == 0
    assert report["coverage"] > 0.95
    df = pd.read_csv(out / "index.csv")
    assert list(df.columns) == INDEX_COLUMNS
    assert len(df) == 30 * 3  # 15 frames, every 5th
    assert df["uid"].nunique() == 30
    for path in df.loc[df.has_face, "crop_path"]:
        assert (out / path).exists()
    meta = json.loads((video_dir(out, recs[0]) / "meta.json").read_text())
    for key in ("record", "video", "settings", "detector", "audio", "summary", "frames"):
        assert key in meta
    fr = meta["frames"][0]
    for key in ("frame_index", "timestamp", "primary", "faces", "crop_path", "frame_path"):
        assert key in fr
    assert meta["video"]["fps"] == 15 and meta["detector"]["name"] == "haar"


def test_audio_rows_align_with_frames(demo_processed):
    out, recs, _ = demo_processed
    vdir = video_dir(out, recs[0])
    meta = json.loads((vdir / "meta.json").read_text())
    npz = np.load(vdir / "audio.npz")
    assert meta["audio"]["has_audio"]
    assert list(npz["frame_index"]) == [f["frame_index"] for f in meta["frames"]]
    assert npz["mfcc"].shape == (3, 20)
    assert npz["valid"].all() and (npz["centroid"] > 0).all() and (npz["zcr"] > 0).all()


def test_resume_skips_finished_and_redoes_partial(demo_processed, tmp_path):
    src, recs, _ = demo_processed
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    victim = video_dir(out, recs[3])
    part = victim.with_name(victim.name + ".part")
    victim.rename(part)  # as if killed before the final rename
    (part / "meta.json").unlink()
    log = LogCallback()
    report = preprocess_videos(recs, out, cfg(), callbacks=[log])
    assert report["processed"] == 1 and report["skipped_finished"] == 29
    assert (victim / "meta.json").exists() and not part.exists()
    assert isinstance(log.events[-2], Progress) and log.events[-2].done == 30


def test_shards_partition_the_records(demo_set):
    recs = list_videos("demo", demo_set)
    parts = [select_shard(recs, (i, 3)) for i in range(3)]
    uids = [r.uid for p in parts for r in p]
    assert sorted(uids) == sorted(r.uid for r in recs)
    assert all(parts)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="0 <= i < N"):
        parse_shard("4/4")
    with pytest.raises(ValueError, match="like i/N"):
        parse_shard("half")


def test_bad_inputs_are_reported_and_the_batch_goes_on(tmp_path, demo_set):
    good = list_videos("demo", demo_set)[:1]
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello" * 100)
    data = (demo_set / good[0].path).read_bytes() if not good[0].path.startswith("/") else \
        open(good[0].path, "rb").read()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])
    write_video(tmp_path / "gray.mp4", n=10, size=(64, 96), color=False)  # portrait, no face
    bad = [VideoRecord(str(tmp_path / n), n.split(".")[0], "fake", "x", "t")
           for n in ("zero.mp4", "text.mp4", "trunc.mp4", "gray.mp4", "gone.mp4")]
    bad[-1].exists = False
    out = tmp_path / "out"
    log = LogCallback()
    report = preprocess_videos(good + bad, out, cfg(), callbacks=[log])
    errs = report["errors"]
    assert "0 bytes" in errs["t/x/na/zero"]
    assert "cannot be opened" in errs["t/x/na/text"]
    assert "missing on disk" in errs["t/x/na/gone"]
    assert report["processed"] >= 2  # the good clip and the grey portrait one
    gray = json.loads((out / "videos/t/x/na/gray/meta.json").read_text())
    # a sampled frame without a face is recorded with the reason, not dropped
    assert len(gray["frames"]) == 2 and all(f["reason"].startswith("no face") for f in gray["frames"])
    assert gray["summary"]["coverage"] == 0.0 and not gray["audio"]["has_audio"]
    assert json.loads((out / "errors.json").read_text()).keys() == errs.keys()
    assert any(e.__class__.__name__ == "JobError" for e in log.events)


def test_crops_only_evenly_spaced_and_reused_boxes(demo_set, tmp_path):
    recs = [r for r in list_videos("demo", demo_set) if r.source_id == "000"]
    c = cfg(save_frames=False, every_nth=0, num_frames=4, reuse_original_boxes=True, audio=False)
    report = preprocess_videos(recs, tmp_path, c)
    assert report["failed"] == 0
    df = pd.read_csv(tmp_path / "index.csv")
    assert (df["frame_path"].isna() | (df["frame_path"] == "")).all()
    assert not list(tmp_path.rglob("frames"))
    assert sorted(df["frame_index"].unique()) == [0, 5, 9, 14]
    orig = df[df.method == "original"].set_index("frame_index")
    for uid, g in df[df.method != "original"].groupby("uid"):
        meta = json.loads((tmp_path / "videos" / uid / "meta.json").read_text())
        assert meta["detector"]["name"] == "reused from original"
        g = g.set_index("frame_index")
        assert np.allclose(g[["x1", "y1", "x2", "y2"]], orig.loc[g.index, ["x1", "y1", "x2", "y2"]])


def test_worker_processes_and_cancel(demo_set, tmp_path):
    recs = list_videos("demo", demo_set)[:4]
    report = preprocess_videos(recs, tmp_path / "a", cfg(workers=2, audio=False))
    assert report["processed"] == 4
    tok = CancelToken()
    seen = []

    def cancel_after_first(event):
        if isinstance(event, Progress) and event.done >= 1:
            seen.append(event.done)
            tok.cancel()

    with pytest.raises(Cancelled):
        preprocess_videos(recs, tmp_path / "b", cfg(audio=False), callbacks=[cancel_after_first],
                          cancel=tok)
    done = pd.read_csv(tmp_path / "b" / "index.csv")["uid"].nunique()
    assert 1 <= done < 4  # finished work kept and indexed
    report = preprocess_videos(recs, tmp_path / "b", cfg(audio=False))
    assert report["skipped_finished"] == done and report["processed"] == 4 - done


def test_stats_and_plots(demo_processed):
    out, _, _ = demo_processed
    stats = dataset_stats(out)
    assert stats["videos"] == 30 and stats["frames"] == 90
    assert stats["label_videos"] == {"fake": 24, "real": 6}
    assert set(stats["method_videos"]) == {"original", "FaceSwap", "Deepfakes", "Face2Face",
                                           "NeuralTextures"}
    assert stats["resolution_videos"] == {"320x320": 30} and stats["videos_with_audio"] == 30
    assert sum(stats["confidence_hist"]["counts"]) == stats["frames_with_face"]
    assert (out / "stats.json").exists()
    figs = plot_stats(stats)
    assert {"labels", "methods", "resolutions", "coverage", "confidence"} <= set(figs)
    assert figs["methods"].data[0].y is not None
    before = (out / "index.csv").read_text()
    (out / "index.csv").unlink()
    rebuilt = build_index(out)  # the index comes back from the meta.json files alone
    assert (out / "index.csv").read_text() == before and len(rebuilt) == stats["frames"]


@pytest.mark.slow
def test_real_clips_yunet_full_coverage_and_dfdc_audio(shared_data, yunet_weights, tmp_path):
    recs = list_videos("folder", shared_data, labels=shared_data / "manifest.csv")
    c = cfg(detector="yunet", detector_weights=str(yunet_weights), every_nth=15,
            det_size=PreprocessConfig().det_size, save_frames=False)
    report = preprocess_videos(recs, tmp_path, c)
    assert report["failed"] == 0 and report["videos"] == 13
    assert report["coverage"] == 1.0, report["per_video"]
    audio = {u: v["has_audio"] for u, v in report["per_video"].items()}
    assert all(audio[u] for u in audio if u.startswith("dfdc/") and not u.endswith("_fr0"))
    assert not any(audio[u] for u in audio if u.startswith("ffpp/"))
    img = cv2.imread(str(next(tmp_path.rglob("crops/*.jpg"))))
    assert img is not None and min(img.shape[:2]) > 64


def test_a_rerun_takes_splits_and_labels_from_the_current_labels(demo_set, tmp_path):
    """Finished videos are skipped, but a split or label changed in the labels file reaches the
    index: a re-split source must not keep a training identity in the test split."""
    import dataclasses

    recs = [r for r in list_videos("demo", demo_set) if r.method == "original"][:2]
    preprocess_videos(recs, tmp_path, cfg(audio=False))
    moved = [dataclasses.replace(recs[0], split="test" if recs[0].split != "test" else "train"),
             recs[1]]
    report = preprocess_videos(moved, tmp_path, cfg(audio=False))
    assert report["skipped_finished"] == 2
    index = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    assert set(index.loc[index["uid"] == recs[0].uid, "split"]) == {moved[0].split}
    assert set(index.loc[index["uid"] == recs[1].uid, "split"]) == {recs[1].split}


def test_a_labels_csv_with_its_own_fps_column_does_not_break_the_statistics(demo_set,
                                                                               tmp_path):
    """Extra columns of a labels CSV (here fps and width, as the talking set's has) travel with
    each video, but what was measured wins in the statistics (their text had replaced the
    measured numbers and the mean failed)."""
    import csv

    rows = list(csv.DictReader((demo_set / "labels.csv").open()))[:4]
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "fps", "width", "gender"])
        w.writeheader()
        for r in rows:
            w.writerow({"path": str(demo_set / r["path"]), "label": r["label"], "fps": "25.0",
                        "width": "wide", "gender": "f"})
    out = tmp_path / "p"
    preprocess_videos(list_videos("folder", demo_set, labels=labels), out, cfg())
    stats = dataset_stats(out)
    assert stats["fps"]["mean"] > 0 and stats["resolution_videos"] == {"320x320": 4}
    assert stats["demographics"] == {"gender": {"f": 4}}


def test_decoders_that_take_the_same_frames_resume_each_other():
    """skip and all take the same frames, so a folder made by one resumes with the other (and
    a folder made before the setting existed, by OpenCV, with the default); keyframes does not."""
    from dflab.data.preprocess import _differ

    old = {"every_nth": 5, "detector": "yunet"}  # no decode: made before the setting
    assert _differ(old, {"every_nth": 5, "detector": "yunet", "decode": "auto"}) == {}
    assert _differ({**old, "decode": "skip"}, {**old, "decode": "all"}) == {}
    assert _differ(old, {**old, "decode": "keyframes"}) == {"decode": ("all", "keyframes")}
    assert _differ({**old, "decode": "skip"}, {**old, "decode": "nvdec"}) == \
        {"decode": ("skip", "nvdec")}

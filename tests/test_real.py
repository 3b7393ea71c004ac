"""`dflab demo --real` end to end on a slice of ../shared/data (its FF++ folder, the DFDC clips,
120 face photos), shrunk to 8 frames a clip and one epoch: every model of the table trained and
scored, the SBI network and the forensic MLP without a single real fake, the table with its
intervals and counts. What the full command measures (and its thresholds, not met on a 2-core
CPU from scratch) is in docs/real-faces.md."""

import csv
import json

import pytest

from dflab.workflows.real import COLUMNS, ROW_NAMES, format_real_report, real_labels


def _slice(shared, tmp_path, photos=120):
    part = tmp_path / "shared"
    part.mkdir()
    for name in ("ffpp", "dfdc", "manifest.csv"):
        (part / name).symlink_to(shared / name)
    faces = part / "faces"
    (faces / "lfw").mkdir(parents=True)
    rows = list(csv.DictReader((shared / "faces" / "list.csv").open()))
    rows = [r for r in rows if r["source"] == "lfw"][:photos]
    for r in rows:
        (faces / r["path"]).symlink_to(shared / "faces" / r["path"])
    with (faces / "list.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return part


def test_labels_split_by_identity_pair(shared_data, tmp_path):
    labels = real_labels(shared_data, tmp_path / "labels.csv")
    rows = list(csv.DictReader(labels.open()))
    assert len(rows) == 61
    by_pair: dict[str, set[str]] = {}
    for r in rows:
        by_pair.setdefault(f"{r['dataset']}/{r['source_id']}", set()).add(r["split"])
    assert all(len(s) == 1 for s in by_pair.values()), by_pair  # a pair never spans splits
    assert {r["split"] for r in rows if r["dataset"] == "dfdc"} == {"test"}
    pairs = {r["source_id"] for r in rows if r["video_id"] in ("035", "036", "035_036")}
    assert pairs == {"035_036"}  # X, Y and X_Y stay together
    assert real_labels(shared_data, tmp_path / "again.csv").read_text() == labels.read_text()


@pytest.mark.slow
def test_real_run_end_to_end_on_a_slice(shared_data, tmp_path):
    from dflab import Lab
    from dflab.data.datasets import load_index
    from dflab.workflows.real import run_real

    lab = Lab(None, data_root=tmp_path / "data")
    report = run_real(lab, _slice(shared_data, tmp_path), "t", epochs=1, ordinary_epochs=1,
                      photos=0, overrides={"preprocess.num_frames": 8,
                                           "eval.frames_per_video": 8, "eval.bootstrap": 200})
    assert report["data"]["photos"] == 120
    rows = report["rows"]
    for key in ("sbi", "forensic", "fused", "ordinary"):
        row = rows[key]
        assert row["frame"]["n_videos"] == row["video"]["n"] > 0
        lo, hi = row["video"]["auc_ci"]
        assert lo <= row["video"]["auc"] <= hi  # every AUC with its interval
        assert set(COLUMNS) <= set(row)
    # the SBI network and the forensic model never saw a real fake
    runs = report["runs"]
    sbi_cfg = json.loads((tmp_path / "data" / "runs" / "train-real-sbi-t" / "train_setup.json")
                         .read_text())
    assert sbi_cfg["pseudo_fakes"] == "sbi"
    pf = load_index(runs["pseudo_fakes"])
    assert set(pf.loc[pf["target"] == 1, "method"]) == {"sbi"}
    clips = load_index(tmp_path / "data" / "processed" / "real_clips")
    assert (clips.loc[clips["split"] == "test", "dataset"] == "dfdc").any()
    text = format_real_report(report)
    for name in ROW_NAMES.values():
        if name.startswith(("identity", "landmark")) and "identity_drift" not in rows:
            continue
        assert name in text
    assert "FF++" in text and "DFDC" in text and "n=" in text

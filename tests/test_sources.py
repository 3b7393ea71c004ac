import pytest

from dflab.sources import (SOURCES, VideoRecord, check_split_leaks, group_split, list_videos,
                           load_ffpp_splits)


def test_ffpp_layout_and_official_splits(shared_data):
    recs = list_videos("ffpp", shared_data / "ffpp")
    by_id = {r.video_id: r for r in recs}
    assert len(recs) == 7
    assert by_id["519_515"].method == "Deepfakes" and by_id["519_515"].label == "fake"
    assert by_id["519_515"].source_id == "519"
    assert (by_id["519"].split, by_id["004"].split, by_id["634"].split) == ("train", "val", "test")
    assert by_id["750_743"].split == "train"  # its original is not here; the split file knows it
    assert all(r.compression == "c23" for r in recs)
    only = list_videos("ffpp", shared_data / "ffpp", methods=["FaceSwap"])
    assert {r.method for r in only} == {"original", "FaceSwap"}


def test_ffpp_split_files(shared_data):
    split_of = load_ffpp_splits(shared_data / "ffpp" / "splits")
    assert len(split_of) == 1000 and set(split_of.values()) == {"train", "val", "test"}


def test_dfdc_reports_missing_and_groups_fakes_with_originals(shared_data):
    recs = list_videos("dfdc", shared_data / "dfdc")
    assert len(recs) == 6
    missing = {r.video_id for r in recs if not r.exists}
    assert missing == {"awnfpubqmo", "vtfpbtmgfh", "zvqinhzeah"}
    for r in recs:
        assert r.method == "dfdc" and r.label == "fake"
        assert r.split == group_split(r.source_id)


def test_folder_source_with_manifest(shared_data):
    recs = list_videos("folder", shared_data, labels=shared_data / "manifest.csv")
    assert len(recs) == 13
    assert sum(r.is_image for r in recs) == 2
    assert all(r.exists for r in recs)
    uids = [r.uid for r in recs]
    assert len(set(uids)) == len(uids)


def test_folder_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        list_videos("folder", tmp_path)
    (tmp_path / "labels.csv").write_text("file,y\na.mp4,1\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['label', 'path'\]"):
        list_videos("folder", tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,maybe\n")
    with pytest.raises(ValueError, match="line 2: label 'maybe'"):
        list_videos("folder", tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,real\nnotes.txt,fake\n")
    recs = list_videos("folder", tmp_path)
    assert [r.video_id for r in recs] == ["a"] and not recs[0].exists


def test_split_leak_check():
    ok = [VideoRecord("a", "1", "real", "original", "x", source_id="1", split="train"),
          VideoRecord("b", "1_2", "fake", "m", "x", source_id="1", split="train")]
    check_split_leaks(ok)
    leak = ok + [VideoRecord("c", "1_3", "fake", "m2", "x", source_id="1", split="test")]
    with pytest.raises(ValueError, match="split leak"):
        check_split_leaks(leak)


def test_uid_keeps_equal_ids_apart():
    a = VideoRecord("p", "004_982", "fake", "NeuralTextures", "ffpp", "c23")
    b = VideoRecord("q", "004_982", "fake", "Deepfakes", "ffpp", "c23")
    assert a.uid != b.uid


def test_demo_source(demo_set):
    recs = list_videos("demo", demo_set)
    assert len(recs) == 30 and {r.split for r in recs} == {"train", "val", "test"}
    assert sorted(SOURCES.list()) == ["demo", "dfdc", "ffpp", "folder"]

import pytest

from dflab.data.sources import (SOURCES, VideoRecord, check_split_leaks, group_split, list_videos,
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
    assert sorted(SOURCES.list()) == ["celebdf", "demo", "dfdc", "ffpp", "folder", "photos"]


def _celebdf(root, listed):
    for folder, names in (("Celeb-real", ["id0_0000", "id0_0001", "id1_0000", "id2_0000"]),
                          ("YouTube-real", ["00000", "00001"]),
                          ("Celeb-synthesis", ["id0_id1_0000", "id1_id0_0000", "id2_id0_0000"])):
        (root / folder).mkdir(parents=True)
        for n in names:
            (root / folder / f"{n}.mp4").write_bytes(b"")
    (root / "List_of_testing_videos.txt").write_text("\n".join(listed) + "\n")


def test_celebdf_test_list_is_the_test_split_and_people_stay_apart(tmp_path):
    _celebdf(tmp_path, ["1 Celeb-real/id2_0000.mp4", "0 Celeb-synthesis/id2_id0_0000.mp4",
                        "1 YouTube-real/00001.mp4"])
    recs = list_videos("celebdf", tmp_path, val=0.5)
    by_id = {r.video_id: r for r in recs}
    assert len(recs) == 9
    assert {v for v, r in by_id.items() if r.split == "test"} == {"id2_0000", "id2_id0_0000",
                                                                  "00001"}
    assert by_id["id0_id1_0000"].label == "fake" and by_id["id0_id1_0000"].source_id == "id0"
    assert by_id["00000"].label == "real" and by_id["00000"].method == "original"
    # outside the list, a person's videos share one split
    assert by_id["id0_0000"].split == by_id["id0_0001"].split == by_id["id0_id1_0000"].split
    assert {r.split for r in recs} <= {"train", "val", "test"}


def test_celebdf_list_that_contradicts_the_folders_is_refused(tmp_path):
    _celebdf(tmp_path, ["0 Celeb-real/id0_0000.mp4"])
    with pytest.raises(ValueError, match="labels id0_0000 fake, but it lies in Celeb-real"):
        list_videos("celebdf", tmp_path)
    (tmp_path / "List_of_testing_videos.txt").write_text("2 Celeb-real/id0_0000.mp4\n")
    with pytest.raises(ValueError, match="line 1"):
        list_videos("celebdf", tmp_path)


def test_photos_are_real_one_frame_videos_split_per_person(tmp_path):
    import cv2
    import numpy as np

    img = np.zeros((20, 20, 3), np.uint8)
    for person in ("ann", "bob", "cy"):
        for k in range(2):
            (tmp_path / person).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / person / f"{k}.jpg"), img)
    recs = list_videos("photos", tmp_path, val=0.3, test=0.3)
    assert len(recs) == 6 and all(r.label == "real" and r.is_image for r in recs)
    for person in ("ann", "bob", "cy"):
        mine = [r for r in recs if r.source_id == person]
        assert len(mine) == 2 and len({r.split for r in mine}) == 1
    assert len(list_videos("photos", tmp_path, limit=3)) == 3
    (tmp_path / "list.csv").write_text("path,identity\nann/0.jpg,zed\n")  # a listing names people
    assert {r.source_id for r in list_videos("photos", tmp_path) if r.video_id == "ann_0"} == {"zed"}

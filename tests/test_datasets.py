"""The crop cache: evaluation images from it equal the ones decoded from the JPEG files; it is
built once and rebuilt when a crop changes."""

import time

import cv2
import numpy as np
import pandas as pd
import torch

from dflab.data.datasets import CropDataset, build_transforms, cache_crops


def test_cached_crops_equal_decoded_crops(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(6):
        img = cv2.GaussianBlur(rng.integers(0, 256, (90 + 7 * k, 80 + 5 * k, 3), np.uint8),
                               (0, 0), 1.5)
        p = tmp_path / f"{k}.jpg"
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    df = pd.DataFrame({"crop_abspath": paths, "target": [0, 1] * 3})
    tf = build_transforms(64, [0.5] * 3, [0.25] * 3, train=False)
    cache = cache_crops(paths, 64, tmp_path / "cache")
    plain, cached = CropDataset(df, tf), CropDataset(df, tf, cache)
    for i in range(len(df)):
        assert torch.equal(plain[i][0], cached[i][0])
    assert cache_crops(paths, 64, tmp_path / "cache") == cache  # built once
    time.sleep(0.01)
    cv2.imwrite(paths[0], np.zeros((90, 80, 3), np.uint8))  # a crop changes: a new cache
    assert cache_crops(paths, 64, tmp_path / "cache") != cache
    import pickle

    assert pickle.loads(pickle.dumps(cached))._arr is None  # workers open their own map


def test_a_damaged_crop_cache_is_built_again_never_read(tmp_path, caplog):
    """The cache's check file (shape, size, BLAKE2b) finds a cache cut short, a byte changed in
    place, or a cache left without its check file (a crash between the two writes)."""
    rng = np.random.default_rng(1)
    paths = []
    for k in range(4):
        p = tmp_path / f"{k}.jpg"
        cv2.imwrite(str(p), rng.integers(0, 256, (70, 60, 3), np.uint8))
        paths.append(str(p))
    cache = cache_crops(paths, 32, tmp_path / "cache")
    good = cache.read_bytes()
    changed = bytearray(good)
    changed[-5] ^= 0xFF  # a pixel of the last crop
    for damage in ("cut", "changed", "no check file"):
        if damage == "cut":
            cache.write_bytes(good[:-300])
        elif damage == "changed":
            cache.write_bytes(bytes(changed))
        else:
            cache.with_name(cache.name + ".json").unlink()
        caplog.clear()
        assert cache_crops(paths, 32, tmp_path / "cache") == cache
        assert "building it again" in caplog.text and str(cache) in caplog.text, damage
        assert cache.read_bytes() == good, damage
    caplog.clear()
    cache_crops(paths, 32, tmp_path / "cache")
    assert "building it again" not in caplog.text  # whole: read as it is


def test_select_split_caps_frames_per_video_and_keeps_every_column():
    import pandas as pd

    from dflab.data.datasets import select_split

    df = pd.DataFrame({"uid": ["a"] * 6 + ["b"] * 2 + ["c"] * 5, "split": ["train"] * 13,
                       "frame_index": list(range(6)) + [0, 1] + list(range(5))})
    part = select_split(df, "train", max_frames_per_video=3, seed=1)
    assert list(part.columns) == ["uid", "split", "frame_index"]
    assert part.groupby("uid").size().to_dict() == {"a": 3, "b": 2, "c": 3}
    assert part.equals(select_split(df, "train", 3, seed=1))  # the same draw for the same seed

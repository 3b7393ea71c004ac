"""Self-blended pseudo-fakes: the mask stays at the face, ratio 0 gives the real image back, a
seed gives the same fakes, and real faces alone are valid training input."""

import cv2
import numpy as np
import pytest

from dflab.data.landmarks import hull_mask, template68
from dflab.visual.pseudo_fakes import (BlendParams, SelfBlendedPairs, blend, blend_mask, mask_reach,
                                self_blend)


def face() -> tuple[np.ndarray, np.ndarray]:
    """A real face photo (uint8 RGB) and landmarks placed on it by the 5-point template."""
    from skimage import data

    from dflab.data.faces import create_detector
    from dflab.data.landmarks import create_landmarker

    rgb = np.ascontiguousarray(data.astronaut())
    f = create_detector("yunet").detect(rgb[:, :, ::-1].copy())[0]
    pts = create_landmarker("template5").predict(rgb, f.box, f.landmarks)
    return rgb, pts


def test_the_mask_stays_within_reach_of_the_landmark_hull():
    img, pts = face()
    hull = hull_mask(pts, img.shape)
    reach = mask_reach(pts)
    grown = cv2.dilate(hull, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(np.ceil(reach)) + 1,) * 2))
    for seed in range(8):
        mask = blend_mask(pts, img.shape, np.random.default_rng(seed))
        assert mask.max() <= 1 and mask.min() >= 0
        assert mask[grown == 0].max() == 0  # nothing outside the hull's reach
        # the middle of the face is blended (eyes, nose and mouth are well inside the hull)
        assert mask[int(pts[30, 1]), int(pts[30, 0])] > 0.5
    # and it reaches much less far than the image: the background is never blended
    assert grown.mean() < 0.6


def test_ratio_zero_gives_the_target_back_and_one_gives_the_source_inside():
    img, pts = face()
    rng = np.random.default_rng(0)
    other = np.full_like(img, 200)
    mask = blend_mask(pts, img.shape, rng)
    assert np.array_equal(blend(other, img, mask, 0.0), img)
    full = blend(other, img, mask, 1.0)
    inside = mask > 0.999
    assert inside.any() and np.array_equal(full[inside], other[inside])


def test_a_fake_without_any_alteration_is_the_real_image():
    """Source transforms off (no colour, shift, scale; the 'frequency' step a no-op at scale
    1): whatever the mask, the blend of an image with itself is the image."""
    img, pts = face()
    still = BlendParams(rgb_shift=0, hue_shift=0, sat_shift=0, val_shift=0, brightness=0,
                        contrast=0, downscale=(1.0, 1.0), p_sharpen=0.0, shift=0,
                        scale=(1.0, 1.0))
    fake, mask = self_blend(img, pts, np.random.default_rng(3), still)
    assert mask.max() > 0 and np.abs(fake.astype(int) - img.astype(int)).max() <= 1


def test_the_same_seed_gives_the_same_fake_and_another_seed_another():
    img, pts = face()
    a, ma = self_blend(img, pts, np.random.default_rng([7, 1, 5]))
    b, mb = self_blend(img, pts, np.random.default_rng([7, 1, 5]))
    c, _ = self_blend(img, pts, np.random.default_rng([7, 2, 5]))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 1  # it is not the real image


def test_pairs_are_balanced_new_each_epoch_and_fixed_for_validation(tmp_path):
    import pandas as pd
    import torch

    img, pts = face()
    paths = []
    for k in range(3):
        p = tmp_path / f"{k}.png"
        cv2.imwrite(str(p), img[:, :, ::-1])
        paths.append(str(p))
    df = pd.DataFrame({"crop_abspath": paths})

    def tf(x):
        return x.float()

    ds = SelfBlendedPairs(df, [pts] * 3, tf, seed=1)
    x, y, r = SelfBlendedPairs.collate([ds[0], ds[1]])
    assert x.shape == (4, 3, 512, 512) and y.tolist() == [0, 1, 0, 1] and r.tolist() == [0, 1, 2, 3]
    assert torch.equal(x[0], torch.from_numpy(img).permute(2, 0, 1).float())  # the real is as read
    first = ds[0][0][1]
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0][1], first)  # a new fake next epoch
    ds.set_epoch(0)
    assert torch.equal(ds[0][0][1], first)  # and the same one for the same epoch and seed
    val = SelfBlendedPairs(df, [pts] * 3, tf, seed=2, fixed=True)
    v0 = val[1][0][1]
    val.set_epoch(5)
    assert torch.equal(val[1][0][1], v0)
    with pytest.raises(ValueError, match="68 landmarks for every crop"):
        SelfBlendedPairs(df, [pts, None, pts], tf)


def test_the_template_hull_is_a_face_sized_region():
    pts = template68() * 60 + 150
    assert 0.05 < hull_mask(pts, (300, 300)).mean() < 0.4

"""Forensic features on images with known properties, and on bad input."""

import cv2
import numpy as np
import pytest

from dflab.data.synthetic import _source_photo, _upconv
from dflab.forensic.extract import extract_many
from dflab.forensic.features import FEATURE_FAMILIES, FEATURE_HELP, as_bgr8, extract_features, feature_names

NAMES = feature_names()


def feats(img):
    return dict(zip(NAMES, extract_features(img)))


def jpeg(img, q):
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)


@pytest.fixture(scope="module")
def crops():
    """Three 256x256 natural-image crops: uint8 BGR."""
    photo = _source_photo()
    return [photo[40:296, 100:356], photo[200:456, 0:256], photo[0:256, 256:512]]


def test_about_fifty_named_features_with_help():
    assert 45 <= len(NAMES) <= 60 and len(set(NAMES)) == len(NAMES)
    assert all(FEATURE_HELP[n] for n in NAMES)
    assert FEATURE_FAMILIES.list() == ["dct", "fft", "noise"]
    for fam in ("fft_", "dct_", "noise_"):
        assert sum(n.startswith(fam) for n in NAMES) >= 10


def test_upsampling_raises_the_grid_peak(crops):
    for img in crops:
        nearest = cv2.resize(img[::2, ::2], (256, 256), interpolation=cv2.INTER_NEAREST)
        upconv = np.clip(_upconv(img.astype(np.float32)), 0, 255).astype(np.uint8)
        base = feats(img)["fft_grid_peak_2"]
        assert feats(nearest)["fft_grid_peak_2"] > base + 1.0
        assert feats(upconv)["fft_grid_peak_2"] > base + 0.1


def test_double_jpeg_raises_the_double_compression_indicator(crops):
    for img in crops:
        single = max(feats(jpeg(img, 90))["dct_double_quant"], feats(jpeg(img, 50))["dct_double_quant"])
        double = feats(jpeg(jpeg(img, 50), 90))["dct_double_quant"]
        assert double > single + 0.05, (double, single)


def test_denoised_image_has_lower_residual_variance(crops):
    rng = np.random.default_rng(0)
    for img in crops:
        noisy = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        den = cv2.fastNlMeansDenoisingColored(noisy, None, 7, 7, 7, 21)
        for ch in "rgb":
            # lower everywhere; texture, which denoising keeps, sets how much lower
            assert feats(den)[f"noise_var_{ch}"] < 0.97 * feats(noisy)[f"noise_var_{ch}"]
    face = crops[0]
    noisy = np.clip(face + rng.normal(0, 6, face.shape), 0, 255).astype(np.uint8)
    den = cv2.fastNlMeansDenoisingColored(noisy, None, 7, 7, 7, 21)
    assert feats(den)["noise_var_g"] < 0.7 * feats(noisy)["noise_var_g"]


def test_white_noise_has_a_flat_spectrum(crops):
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    w, n = feats(noise), feats(crops[0])
    assert w["fft_entropy"] > 0.9 and w["fft_entropy"] > n["fft_entropy"] + 0.3
    assert abs(w["fft_slope"]) < 0.3 and n["fft_slope"] < -1.5  # flat vs 1/f^2-like
    assert w["fft_flatness"] > 0.4 > n["fft_flatness"]


def test_spliced_patch_with_other_noise_raises_inconsistency(crops):
    rng = np.random.default_rng(2)
    for img in crops:
        noisy = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        spliced = noisy.copy()
        spliced[64:192, 64:192] = cv2.GaussianBlur(img, (5, 5), 1.5)[64:192, 64:192]
        a, b = feats(noisy), feats(spliced)
        assert b["noise_center_border"] < a["noise_center_border"] - 0.2
        assert b["noise_local_range"] > a["noise_local_range"]


@pytest.mark.parametrize("img", [
    np.zeros((8, 8), np.uint8),                         # one block, constant
    np.full((40, 30, 3), 200, np.uint8),                # constant colour
    np.random.default_rng(0).integers(0, 256, (33, 47)).astype(np.uint8),  # grey, odd size
    np.random.default_rng(0).integers(0, 256, (64, 64, 4)).astype(np.uint8),  # RGBA
    np.random.default_rng(0).integers(0, 65536, (64, 64, 3)).astype(np.uint16),  # 16-bit
    np.random.default_rng(0).random((32, 32, 3)),       # float in [0, 1]
], ids=["8x8-constant", "constant", "gray-odd", "rgba", "16bit", "float"])
def test_bad_or_odd_input_gives_finite_values(img):
    v = extract_features(img)
    assert v.shape == (len(NAMES),) and np.isfinite(v).all()


def test_too_small_or_not_an_image_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than one 8x8 block"):
        extract_features(np.zeros((7, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="8x8"):
        as_bgr8(np.zeros(10))


def _crop_files(folder, crops) -> list[str]:
    """The crops written as JPEG files in ``folder``; their paths."""
    paths = []
    for i, c in enumerate(crops):
        p = folder / f"{i}.jpg"
        cv2.imwrite(str(p), c)
        paths.append(str(p))
    return paths


def test_extract_many_caches_per_crop(tmp_path, crops):
    paths = _crop_files(tmp_path, crops)
    cache = tmp_path / "cache"
    a = extract_many(paths, cache)
    assert len(list(cache.rglob("*.vec"))) == 3
    seen = []
    b = extract_many(paths, cache, progress=lambda d, n: seen.append(d))
    assert np.array_equal(a, b) and seen[0] == 3  # all three from the cache
    c = extract_many(paths, None, workers=2)
    assert np.allclose(a, c)


def test_a_damaged_features_cache_is_computed_again_never_read(tmp_path, crops, caplog):
    """Each cached vector carries its length and a CRC-32: a file cut short, with a flipped
    byte, of another length, or not ours is found, logged and computed again."""
    paths = _crop_files(tmp_path, crops)
    cache = tmp_path / "cache"
    a = extract_many(paths, cache)
    files = sorted(cache.rglob("*.vec"), key=lambda f: f.stat().st_mtime_ns)
    assert len(files) == 3
    raw = files[0].read_bytes()
    flipped = bytearray(raw)
    flipped[40] ^= 0x10  # one bit of one value: still a plausible float
    for damage in (raw[:100], bytes(flipped), raw[:16] + raw[16:] + raw[-8:], b"\x93NUMPY"):
        files[0].write_bytes(damage)
        caplog.clear()
        seen = []
        b = extract_many(paths, cache, progress=lambda d, n, seen=seen: seen.append(d))
        assert np.array_equal(a, b) and seen[0] == 2  # two from the cache, one computed again
        assert "cut short or damaged" in caplog.text and str(files[0]) in caplog.text
        assert files[0].read_bytes() == raw  # and written back whole


def test_values_equal_the_reference_implementation():
    """The faster implementation (real FFTs in float32, one gather for the grid peaks, lattice
    fits as one matrix, noise moments from histograms and integer sums, the block DCT as two
    matrix products, first digits from a table) gives the values of the straightforward float64
    version (FEATURES_VERSION 2, saved before the rewrite; three DCT columns recomputed for
    version 3's tie margin, see fixtures/features_v3_columns.py) on 11 images: photos of several
    sizes, double JPEG, 2x nearest up-sampling, noise, a constant, 8x8 and demo crops."""
    ref = _reference()
    assert list(ref["names"]) == feature_names()
    for k, key in enumerate(ref["keys"]):
        got = extract_features(ref[f"img_{key}"])
        np.testing.assert_allclose(got, ref["X"][k], rtol=2e-5, atol=1e-7, err_msg=str(key))


def _reference():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    from features_v3_columns import reference

    return reference()


def test_torch_backend_equals_numpy_on_the_reference_images():
    """features.backend=torch: every feature of the 11 reference images (each its own shape, a
    batch of one) within 1e-4 relative of the NumPy backend."""
    from dflab.forensic.features_torch import extract_batch

    ref = _reference()
    for key in ref["keys"]:
        img = ref[f"img_{key}"]
        np.testing.assert_allclose(extract_batch([img], "cpu")[0], extract_features(img),
                                   rtol=1e-4, atol=1e-6, err_msg=str(key))


def test_torch_backend_in_batches_and_through_extract_many(tmp_path, crops):
    """A batch of equal-sized crops gives each crop's own values (no mixing across the batch);
    extract_many groups files by shape, keeps the order, caches per backend and takes subsets."""
    from dflab.forensic.features_torch import extract_batch

    photo = _source_photo()
    same = [photo[y:y + 128, x:x + 128] for y, x in ((0, 0), (50, 200), (300, 100), (10, 380))]
    batch = extract_batch(same, "cpu")
    for img, row in zip(same, batch):
        np.testing.assert_allclose(row, extract_features(img), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        extract_batch([same[0], crops[0]], "cpu")

    paths = []
    for k, img in enumerate(same + list(crops) + [jpeg(crops[0], 70)[:200, :160]]):
        p = tmp_path / f"{k}.png"
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    want = extract_many(paths)
    got = extract_many(paths, tmp_path / "cache", backend="torch", device="cpu", batch_size=3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert len(list((tmp_path / "cache").rglob("*.vec"))) == len(paths)
    np.testing.assert_array_equal(
        extract_many(paths, tmp_path / "cache", backend="torch", device="cpu"), got)  # cached
    numpy_cached = extract_many(paths, tmp_path / "cache")  # another backend: its own entries
    np.testing.assert_array_equal(numpy_cached, want)
    assert len(list((tmp_path / "cache").rglob("*.vec"))) == 2 * len(paths)
    sub = ["noise_var_r", "fft_slope", "dct_benford"]
    np.testing.assert_allclose(
        extract_many(paths, backend="torch", device="cpu", names=sub),
        want[:, [NAMES.index(n) for n in sub]], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="backend 'jax'"):
        extract_many(paths, backend="jax")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_backend_on_the_gpu_equals_numpy():
    from dflab.forensic.features_torch import extract_batch

    ref = _reference()
    for key in ref["keys"]:
        img = ref[f"img_{key}"]
        np.testing.assert_allclose(extract_batch([img], "cuda")[0], extract_features(img),
                                   rtol=1e-4, atol=1e-6, err_msg=str(key))

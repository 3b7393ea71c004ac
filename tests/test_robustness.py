"""Robustness perturbations: each one degrades a crop more as its strength grows, keeps its shape
and type, and is reproducible."""

import numpy as np
import pytest

from dflab.analysis.robustness import PERTURBATIONS, _conditions, format_robustness, perturb


def _face_like(seed: int = 0) -> np.ndarray:
    """uint8 (160, 128, 3) BGR with edges and fine texture, so every degradation shows."""
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(40, 220, (10, 8, 3)), np.ones((16, 16, 1))).astype(float)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_degrades_more_as_it_gets_harsher(name):
    img = _face_like()
    strengths, _, _ = PERTURBATIONS[name]
    errors = []
    for s in strengths:
        out = perturb(img, name, s, seed=3)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out, perturb(img, name, s, seed=3))
        errors.append(np.abs(out.astype(float) - img).mean())
    assert errors[0] > 0 and all(a < b for a, b in zip(errors, errors[1:])), errors


def test_unknown_perturbation_names_the_choices():
    with pytest.raises(ValueError, match="jpeg, blur, downscale, noise"):
        perturb(_face_like(), "rotate", 10)
    with pytest.raises(ValueError, match="'sharpen'"):
        _conditions(["jpeg", "sharpen"])


def test_table_has_a_line_per_condition_and_a_column_per_model():
    rows = [{"model": m, "perturbation": p, "strength": s, "frame_auc": 0.9,
             "frame_auc_ci": [0.8, 0.95], "video_auc": 0.93}
            for p, s in _conditions(["jpeg"]) for m in ("visual", "fused")]
    text = format_robustness(rows).splitlines()
    assert len(text) == 1 + 5 and "visual frame" in text[0] and "fused frame" in text[0]
    assert text[2].split()[:2] == ["jpeg", "90"] and "0.900 [0.800, 0.950] / 0.930" in text[2]

"""Grad-CAM through pytorch-grad-cam: a model that must find one patch to tell fake from real
puts the heatmap on that patch."""

import numpy as np
import pytest
import torch

from dflab.core.config import ModelConfig
from dflab.analysis.explain import METHODS, explain_crops, overlay, target_layer
from dflab.visual.models import create_model

SIZE, PATCH, MARGIN = 128, 24, 16


def _images(rng, n: int, fake: bool):
    """Blocky noise faces-to-be (uint8 RGB); a fake carries a checkerboard patch at a random
    place. Returns (images, patch corners)."""
    imgs, corners = [], []
    for _ in range(n):
        img = np.kron(rng.normal(128, 20, (SIZE // 8, SIZE // 8, 3)), np.ones((8, 8, 1)))
        img += rng.normal(0, 4, img.shape)
        y, x = rng.integers(0, SIZE - PATCH, 2)
        if fake:
            board = (np.indices((PATCH, PATCH)).sum(0) % 2)[..., None] * 120.0 - 60
            img[y:y + PATCH, x:x + PATCH] += board
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        corners.append((int(y), int(x)))
    return imgs, corners


@pytest.fixture(scope="module")
def patch_model():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    real, _ = _images(rng, 160, False)
    fake, _ = _images(rng, 160, True)
    dc = {"input_size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3}
    x = torch.from_numpy(((np.stack(real + fake) / 255 - 0.5) / 0.25).transpose(0, 3, 1, 2)
                         .astype(np.float32))
    y = torch.tensor([0] * 160 + [1] * 160)
    model = create_model(ModelConfig(backbone="resnet10t", pretrained=False))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    for _ in range(3):
        model.train()
        for b in torch.randperm(len(y)).split(32):
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), dc, rng


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_heatmap_mass_lies_on_the_patch_that_decides_the_label(patch_model, method):
    model, dc, rng = patch_model
    fakes, corners = _images(rng, 12, True)
    reals, _ = _images(rng, 12, False)
    probs, maps = explain_crops(model, dc, fakes, method)
    assert maps.shape == (12, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    assert probs.min() > explain_crops(model, dc, reals, method)[0].max()  # it learned the rule
    share = []
    for (y, x), m in zip(corners, maps):
        box = np.zeros_like(m, bool)
        box[max(0, y - MARGIN):y + PATCH + MARGIN, max(0, x - MARGIN):x + PATCH + MARGIN] = True
        share.append(m[box].sum() / m.sum())
    area = (PATCH + 2 * MARGIN) ** 2 / SIZE ** 2  # 0.19: the share of a uniform heatmap
    assert np.median(share) > 0.55 and min(share) > 1.5 * area, np.round(share, 2)


def test_target_layer_is_the_last_timm_stage_and_overlay_keeps_the_crop():
    model = create_model(ModelConfig(backbone="resnet10t", pretrained=False)).eval()
    assert target_layer(model) is model.backbone.layer4
    crop = np.full((200, 160, 3), 90, np.uint8)
    ov = overlay(crop, np.zeros((64, 64), np.float32))
    assert ov.shape == (64, 64, 3) and ov.dtype == np.uint8


@pytest.mark.slow
def test_unknown_method_names_the_choices(patch_model):
    model, dc, _ = patch_model
    with pytest.raises(ValueError, match="gradcam, gradcam\\+\\+"):
        explain_crops(model, dc, [np.zeros((64, 64, 3), np.uint8)], "lime")

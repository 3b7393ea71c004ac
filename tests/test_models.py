"""The visual detector over timm backbones of every head shape the presets use."""

import pytest
import torch

from dflab.core.config import ModelConfig
from dflab.visual.models import create_model, data_config


@pytest.mark.parametrize("backbone", ["resnet10t", "mobilenetv3_small_100", "efficientnet_b0",
                                      "legacy_xception", "test_efficientnet"])
def test_every_head_shape_gives_two_logits(backbone):
    """Backbones whose pooled output is widened by a head of their own (MobileNetV3's conv
    head) as well as plain ones: the detector's head is built on what the backbone returns."""
    cfg = ModelConfig(backbone=backbone, pretrained=False, input_size=64, head_hidden=16)
    model = create_model(cfg).eval()
    assert data_config(model, cfg)["input_size"] == 64
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)

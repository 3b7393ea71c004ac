import json
import random

import numpy as np
import pytest

from dflab.core import environment as E
from conftest import FIXTURES

SMI = FIXTURES / "nvidia_smi"


@pytest.mark.parametrize("name, n, first", [
    ("t4.txt", 1, ("Tesla T4", 15360, 15101, "7.5")),
    ("v100.txt", 1, ("Tesla V100-SXM2-16GB", 16384, 16130, "7.0")),
    ("a100.txt", 2, ("NVIDIA A100-SXM4-40GB", 40960, 40339, "8.0")),
    ("p100_old_driver.txt", 1, ("Tesla P100-PCIE-16GB", 16280, 16017, "")),
    ("none.txt", 0, None),
])
def test_parse_recorded_nvidia_smi(name, n, first):
    gpus = E.parse_nvidia_smi((SMI / name).read_text())
    assert len(gpus) == n
    if first:
        g = gpus[0]
        assert (g.name, g.memory_total_mib, g.memory_free_mib, g.capability) == first


def test_advice_follows_memory_not_names():
    # the seed's figures: EfficientNet-B4 at 380 px, batch 32 on a 16 GB T4, 64 on a 32 GB V100
    t4 = E.advise(15101, "efficientnet_b4", 380, 64)
    assert (t4["batch_size"], t4["accumulation"], t4["amp"]) == (32, 2, "fp16")
    v100 = E.advise(32510, "efficientnet_b4", 380, 64)
    assert v100["batch_size"] == 64 and v100["accumulation"] == 1
    a100 = E.advise(40339, "efficientnet_b4", 380, 64, bf16=True)
    assert a100["amp"] == "bf16"
    # a bigger model at a bigger input needs a smaller batch on the same card
    b7 = E.advise(15101, "efficientnet_b7", 600, 64)
    assert b7["batch_size"] < t4["batch_size"]
    assert b7["batch_size"] * b7["accumulation"] >= 64
    # less memory never gives a bigger batch
    sizes = [E.advise(m, "efficientnet_b4", 380, 256)["batch_size"] for m in (4000, 8000, 16000,
                                                                              32000, 80000)]
    assert sizes == sorted(sizes)
    cpu = E.advise(0, "efficientnet_b4", 380, 64)
    assert cpu["device"] == "cpu" and cpu["amp"] == "off"


def test_activation_count_grows_with_input():
    small, p1 = E.estimate_activation_bytes("resnet18", 112)
    big, p2 = E.estimate_activation_bytes("resnet18", 224)
    assert p1 == p2 and 3.5 < big / small < 4.5


def test_setup_runtime_seeds_everything():
    import torch

    s = E.setup_runtime(seed=7, deterministic=True, workers=-1)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    E.setup_runtime(seed=7, deterministic=True)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    assert s["deterministic"] and not s["cudnn_benchmark"]
    assert s["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert s["workers"] >= 0
    assert E.setup_runtime(seed=7, workers=3)["workers"] == 3
    torch.use_deterministic_algorithms(False)


def test_colab_detection_and_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert not E.in_colab()
    with pytest.raises(RuntimeError, match="only inside Google Colab"):
        E.mount_drive()
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-1")
    assert E.in_colab()
    paths = E.resolve_paths(str(tmp_path / "root"))
    for key in ("data_root", "raw", "processed", "features", "runs", "cache"):
        assert paths[key].is_dir()
    monkeypatch.setenv("DFLAB_DATA", str(tmp_path / "env_root"))
    assert E.resolve_paths()["data_root"] == tmp_path / "env_root"


def test_environment_report_on_this_machine(tmp_path):
    rep = E.environment_report(tmp_path, "resnet18", 224, 64)
    json.dumps(rep)
    for key in ("python", "cpu_cores", "ram_total_gb", "disk_free_gb", "colab", "nvidia_smi",
                "torch", "advice", "gpu"):
        assert key in rep
    for key in ("version", "cuda_available", "cuda_version", "cudnn_version", "devices"):
        assert key in rep["torch"]
    assert rep["cpu_cores"] >= 1 and rep["disk_free_gb"] > 0
    assert rep["advice"]["batch_size"] >= 1

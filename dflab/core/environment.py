"""Environment stage: what machine this is, what it can do, and how to set the runtime up.

- :func:`query_nvidia_smi` / :func:`parse_nvidia_smi`: GPUs as the driver sees them;
- :func:`torch_report`: GPUs as torch sees them (capability, bf16, CUDA/cuDNN versions);
- :func:`advise`: batch size, AMP dtype and gradient accumulation from measured GPU memory;
- :func:`in_colab`, :func:`mount_drive`, :func:`resolve_paths`: where data lives;
- :func:`setup_runtime`: seeds, cuDNN flags, data-loader workers.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

__all__ = [
    "GpuInfo",
    "parse_nvidia_smi",
    "query_nvidia_smi",
    "torch_report",
    "torch_device",
    "estimate_activation_bytes",
    "advise",
    "in_colab",
    "mount_drive",
    "resolve_paths",
    "setup_runtime",
    "environment_report",
]

NVIDIA_SMI_FIELDS = "index,name,memory.total,memory.free,driver_version,compute_cap"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int
    driver: str = ""
    capability: str = ""  # "7.5"


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits``.

    Old drivers do not know ``compute_cap`` and print ``[N/A]`` or leave it out; that is kept as "".
    """
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        cap = parts[5] if len(parts) > 5 and "N/A" not in parts[5] else ""

        def mib(s: str) -> int:
            s = s.replace("MiB", "").strip()
            return int(float(s)) if s.replace(".", "").isdigit() else 0

        gpus.append(GpuInfo(int(parts[0]), parts[1], mib(parts[2]), mib(parts[3]), parts[4], cap))
    return gpus


def query_nvidia_smi(timeout: float = 10.0) -> tuple[list[GpuInfo], str]:
    """Run nvidia-smi; returns (gpus, note). No GPU or no nvidia-smi gives ([], why)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return [], "nvidia-smi not found (no NVIDIA driver on this machine)"
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed: {exc}"
    if out.returncode != 0:
        return [], f"nvidia-smi exited {out.returncode}: {out.stderr.strip() or out.stdout.strip()}"
    return parse_nvidia_smi(out.stdout), ""


def torch_report() -> dict[str, Any]:
    import torch

    rep: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": "",
        "devices": [],
    }
    if torch.backends.cudnn.is_available():
        rep["cudnn_version"] = str(torch.backends.cudnn.version() or "")
    if rep["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            rep["devices"].append({
                "index": i,
                "name": props.name,
                "memory_total_mib": total // 2**20,
                "memory_free_mib": free // 2**20,
                "capability": f"{props.major}.{props.minor}",
                "bf16": props.major >= 8,
                "multiprocessors": props.multi_processor_count,
            })
    return rep


@lru_cache(maxsize=64)
def estimate_activation_bytes(backbone: str, input_size: int) -> tuple[int, int]:
    """(activation elements per sample kept for backward, parameter count) of a timm backbone.

    Counted on PyTorch's meta device (no memory, no weights): the sum of the output sizes of every
    leaf module in one forward pass at batch 1. No library reports this, so it is written here.
    """
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False, num_classes=2)
        x = torch.empty(1, 3, input_size, input_size)
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children())]
    model.train()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    return total, params


# Bytes kept per counted activation element: 2 under AMP (half-precision tensors), 4 in fp32.
# The rule was checked against the seed's measured figures, EfficientNet-B4 at 380 px: batch 32 on
# a 16 GB T4 (15360 MiB) with fp16 AMP, and 64 on a 32 GB V100.
BYTES_PER_ACTIVATION = {"fp16": 2.0, "bf16": 2.0, "off": 4.0}
RESERVED_MIB = 1000  # CUDA context, cuDNN workspace, allocator fragmentation


def advise(memory_mib: int, backbone: str = "efficientnet_b4", input_size: int = 380,
           target_batch: int = 64, bf16: bool = False) -> dict[str, Any]:
    """Batch size, AMP dtype and accumulation steps for a GPU with ``memory_mib`` of memory.

    The batch is the largest power of two whose activations, plus weights, gradients and AdamW
    state, fit in 90% of the memory left after :data:`RESERVED_MIB`. ``memory_mib`` 0 means CPU.
    """
    acts, params = estimate_activation_bytes(backbone, input_size)
    if memory_mib <= 0:
        batch = 8 if acts < 50e6 else 4
        return {"device": "cpu", "amp": "off", "batch_size": batch,
                "accumulation": max(1, math.ceil(target_batch / batch)),
                "effective_batch": batch * max(1, math.ceil(target_batch / batch)),
                "activation_mib_per_sample": round(acts * BYTES_PER_ACTIVATION["off"] / 2**20, 1),
                "reason": "no GPU: small batch on CPU"}
    amp = "bf16" if bf16 else "fp16"
    static = params * 16  # fp32 weights + grads + AdamW exp_avg and exp_avg_sq
    per_sample = acts * BYTES_PER_ACTIVATION[amp]
    budget = 0.9 * (memory_mib - RESERVED_MIB) * 2**20 - static
    fit = max(1, int(budget // per_sample)) if budget > 0 else 1
    batch = 2 ** int(math.log2(fit))
    batch = min(batch, target_batch)
    accumulation = max(1, math.ceil(target_batch / batch))
    return {
        "device": "cuda",
        "amp": amp,
        "batch_size": batch,
        "accumulation": accumulation,
        "effective_batch": batch * accumulation,
        "activation_mib_per_sample": round(per_sample / 2**20, 1),
        "static_mib": round(static / 2**20, 1),
        "reason": f"{memory_mib} MiB: {fit} samples fit, rounded down to a power of two",
    }


def in_colab() -> bool:
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return True
    return False


def mount_drive(mountpoint: str = "/content/drive") -> Path:
    """Mount Google Drive in Colab (asks for consent in the browser once); returns MyDrive."""
    if not in_colab():
        raise RuntimeError("mount_drive works only inside Google Colab; locally set "
                           "env.data_root to a folder instead")
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mountpoint)
    return Path(mountpoint) / "MyDrive"


def resolve_paths(data_root: str = "", runs_dir: str = "", use_drive: bool = True) -> dict[str, Path]:
    """Choose and create the data folders.

    Order: the given ``data_root``; ``$DFLAB_DATA``; on Colab with Drive mounted,
    ``MyDrive/dflab`` so work survives a disconnect; else ``./data``.
    """
    root_s = data_root or os.environ.get("DFLAB_DATA", "")
    if not root_s and in_colab() and use_drive:
        mydrive = Path("/content/drive/MyDrive")
        root_s = str(mydrive / "dflab") if mydrive.is_dir() else "/content/dflab"
    root = Path(root_s or "data").expanduser().resolve()
    paths = {
        "data_root": root,
        "raw": root / "raw",
        "processed": root / "processed",
        "features": root / "features",
        "runs": Path(runs_dir).expanduser().resolve() if runs_dir else root / "runs",
        "cache": root / "cache",
    }
    for p in paths.values():
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create folder '{p}' ({exc}); set env.data_root to a writable "
                          f"folder") from exc
    return paths


def check_data_root(path: str | Path, current: str | Path = "") -> Path:
    """``path`` as a data root, resolved, without creating anything: an existing writable
    folder, or one whose nearest existing parent is writable and lies under the home folder,
    the working folder, ``/content`` (Colab) or the ``current`` data root's parent. Raises
    ValueError naming the path and the fix."""
    text = str(path).strip()
    if not text:
        raise ValueError("the data root is empty: type a folder (e.g. ~/dflab-data) and press "
                         "'Use this folder'")
    root = Path(text).expanduser().resolve()
    if root.exists():
        if not root.is_dir():
            raise ValueError(f"data root '{root}' is a file, not a folder: choose a folder")
        if not os.access(root, os.W_OK):
            raise ValueError(f"data root '{root}' is not writable: choose a folder you can "
                             f"write to")
        return root
    allowed = [Path.home().resolve(), Path.cwd().resolve(), Path("/content")]
    if current:
        allowed.append(Path(current).expanduser().resolve().parent)
    if not any(root.is_relative_to(a) for a in allowed):
        raise ValueError(f"data root '{root}' does not exist and is outside your home folder, "
                         f"the working folder and the current data root's parent; create it "
                         f"first (mkdir -p '{root}') or choose a folder under "
                         f"{', '.join(str(a) for a in allowed)}")
    parent = next(p for p in root.parents if p.exists())
    if not os.access(parent, os.W_OK):
        raise ValueError(f"data root '{root}' cannot be created: '{parent}' is not writable")
    return root


def default_workers(requested: int = -1) -> int:
    """DataLoader workers: all cores but one, at most 8; ``requested`` >= 0 wins."""
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) - 1))


def torch_device(device: str = "auto"):
    """A ``torch.device`` for an ``env.device``-style setting; ``auto`` (or empty): the GPU when
    torch sees one, else the CPU."""
    import torch

    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def scoring_workers(device: str) -> int:
    """DataLoader workers for scoring crops: none on a CPU, where a loader process only takes
    cores from the model's threads (the demo's 300 test crops: 2.25-2.55 s with none, 2.36-2.43 s
    with one, 2 cores) and a forked worker can hang in torch's thread pool when the parent ran
    torch from other threads (seen once in CI after the dashboard's job threads); on a GPU,
    :func:`default_workers`."""
    return 0 if str(device) == "cpu" else default_workers(-1)


def setup_runtime(seed: int = 42, deterministic: bool = False, amp: str = "auto",
                  workers: int = -1) -> dict[str, Any]:
    """Seed Python, NumPy and torch; set cuDNN flags; choose workers and AMP. Returns the settings."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(False)
    cuda = torch.cuda.is_available()
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    return {
        "seed": seed,
        "deterministic": deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "device": "cuda" if cuda else "cpu",
        "amp": amp,
        "workers": default_workers(workers),
        "pin_memory": cuda,
    }


def environment_report(data_root: str | Path = "", backbone: str = "efficientnet_b4",
                       input_size: int = 380, target_batch: int = 64) -> dict[str, Any]:
    """Everything the environment tab and ``dflab env`` show, as a JSON-able dict."""
    import psutil

    gpus, smi_note = query_nvidia_smi()
    trep = torch_report()
    root = Path(data_root or ".").resolve()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    disk = shutil.disk_usage(probe)
    vm = psutil.virtual_memory()
    if trep["devices"]:
        dev = trep["devices"][0]
        mem, bf16 = dev["memory_free_mib"], dev["bf16"]
    elif gpus:
        mem = gpus[0].memory_free_mib
        bf16 = bool(gpus[0].capability) and float(gpus[0].capability) >= 8.0
    else:
        mem, bf16 = 0, False
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "ram_total_gb": round(vm.total / 2**30, 1),
        "ram_available_gb": round(vm.available / 2**30, 1),
        "data_root": str(root),
        "disk_free_gb": round(disk.free / 2**30, 1),
        "colab": in_colab(),
        "nvidia_smi": [asdict(g) for g in gpus],
        "nvidia_smi_note": smi_note,
        "torch": trep,
        "gpu": bool(gpus or trep["devices"]),
        "advice": advise(mem, backbone, input_size, target_batch, bf16),
        "advice_for": {"backbone": backbone, "input_size": input_size,
                       "target_batch": target_batch, "memory_mib": mem},
    }


@contextmanager
def kept_environ() -> Iterator[None]:
    """Put ``os.environ`` back as it was on exit. Libraries dflab calls write thread limits
    into it (Dask's Nanny, ultralytics: OMP_NUM_THREADS=1...) and leave them, and every process
    started later inherits them."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        if os.environ != environ:
            os.environ.clear()
            os.environ.update(environ)


def default_cache() -> Path:
    """The user's dflab cache, outside any data root: ``$DFLAB_CACHE``, else
    ``~/.cache/dflab`` (downloaded detector weights when no data root is given, the CLI's logs)."""
    return Path(os.environ.get("DFLAB_CACHE", Path.home() / ".cache" / "dflab"))

"""Pretrained weights without the hub: a timm checkpoint file, a Hugging Face cache folder, and
HF_HUB_OFFLINE=1 with a filled cache. The weights are written from a randomly initialised timm
model inside the test, so nothing touches the network."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from dflab.core.config import ModelConfig
from dflab.visual.models import create_model, hub_id, resolve_weights

BACKBONE = "resnet10t"


@pytest.fixture(scope="module")
def reference():
    import timm

    torch.manual_seed(123)
    return timm.create_model(BACKBONE, pretrained=False).state_dict()


def _assert_loaded(model, reference):
    got = model.backbone.state_dict()
    compared = 0
    for k, v in got.items():
        if k in reference and v.dtype.is_floating_point:
            assert torch.equal(v, reference[k]), k
            compared += 1
    assert compared > 20  # every conv and BN tensor of the backbone, not a handful


def _hf_cache(root, state):
    """A Hugging Face hub cache as hf_hub_download leaves it: blobs, a snapshot, refs/main."""
    from safetensors.torch import save_file

    repo = hub_id(BACKBONE)
    base = root / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return root


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_weights_file_loads_offline(tmp_path, reference, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    else:
        torch.save(reference, path)
    model = create_model(ModelConfig(backbone=BACKBONE, pretrained=True, weights_path=str(path)))
    _assert_loaded(model, reference)


def test_hf_cache_folder_as_weights_path(tmp_path, reference):
    cache = _hf_cache(tmp_path / "drive" / "weights", reference)
    assert resolve_weights(BACKBONE, cache).name == "model.safetensors"
    model = create_model(ModelConfig(backbone=BACKBONE, pretrained=True, weights_path=str(cache)))
    _assert_loaded(model, reference)


@pytest.mark.slow
def test_hf_hub_offline_with_filled_cache(tmp_path, reference):
    """The plain hub path (pretrained=true, no weights_path) with HF_HUB_OFFLINE=1 and the cache
    in HF_HUB_CACHE: how a Colab user keeps the cache on Drive."""
    cache = _hf_cache(tmp_path / "hub", reference)
    ref = tmp_path / "ref.pt"
    torch.save(reference, ref)
    code = (
        "import sys, torch\n"
        "from dflab.core.config import ModelConfig\n"
        "from dflab.visual.models import create_model\n"
        f"m = create_model(ModelConfig(backbone='{BACKBONE}', pretrained=True))\n"
        f"ref = torch.load(r'{ref}', weights_only=True)\n"
        "sd = m.backbone.state_dict()\n"
        "bad = [k for k in sd if k in ref and sd[k].dtype.is_floating_point and not torch.equal(sd[k], ref[k])]\n"
        "print(len(bad)); sys.exit(1 if bad else 0)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "HF_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_missing_or_wrong_weights_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="dflab weights fetch resnet10t"):
        resolve_weights(BACKBONE, tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no weights for 'resnet10t'"):
        resolve_weights(BACKBONE, tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a weights file"):
        resolve_weights(BACKBONE, tmp_path / "notes.txt")


@pytest.mark.slow
def test_cli_weights_check(tmp_path, reference):
    cache = _hf_cache(tmp_path / "w", reference)
    out = subprocess.run([sys.executable, "-m", "dflab", "weights", "check", BACKBONE, "--to",
                          str(cache)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loaded" in out.stdout and "model.safetensors" in out.stdout
    out = subprocess.run([sys.executable, "-m", "dflab", "weights", "fetch", BACKBONE],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "needs --to DIR" in out.stderr


@pytest.mark.slow
@pytest.mark.network
def test_fetch_downloads_through_the_hub_client(tmp_path, reference):
    """`dflab weights fetch` on the real download path (timm -> huggingface_hub), against a
    loopback server that answers as the hub does (HF_ENDPOINT points at it)."""
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from safetensors.torch import save_file

    blob = tmp_path / "served.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(blob))
    body = blob.read_bytes()
    path = f"/{hub_id(BACKBONE)}/resolve/main/model.safetensors"
    seen = []

    class Hub(BaseHTTPRequestHandler):
        def _head(self) -> bool:
            seen.append((self.command, self.path))
            if self.path.split("?")[0] != path:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return True

        def do_HEAD(self):  # noqa: N802
            self._head()

        def do_GET(self):  # noqa: N802
            if self._head():
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
               "HF_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_XET": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        dest = tmp_path / "drive" / "weights"
        out = subprocess.run([sys.executable, "-m", "dflab", "weights", "fetch", BACKBONE,
                              "--to", str(dest)], capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=300)
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr[-2000:]
    assert ("GET", path) in seen
    assert f"model.weights_path={dest}" in out.stdout
    model = create_model(ModelConfig(backbone=BACKBONE, pretrained=True, weights_path=str(dest)))
    _assert_loaded(model, reference)

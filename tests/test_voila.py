"""`make lab`'s server: Voila serves the dashboard notebook and answers HTTP 200."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"voila did not listen on {port} in {timeout} s")


def voila_flags(cull_s: int = 300) -> list[str]:
    """`make lab`'s Voila flags (VOILA_FLAGS in the Makefile), with CULL_S = ``cull_s``."""
    import re
    import shlex

    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^VOILA_FLAGS := (.*?)\n(?!  )", text, re.S | re.M).group(1)
    flags = shlex.split(block.replace("\\\n", " ").replace("$(CULL_S)", str(cull_s)))
    cull = next(f for f in flags if "cull_interval" in f)
    return [f if f != cull else f"--MappingKernelManager.cull_interval={min(30, max(5, cull_s // 4))}"
            for f in flags]


def start_voila(port: int, data_root: Path, cull_s: int = 300, token: str = ""
                ) -> subprocess.Popen:
    """`make lab`'s Voila on ``port`` over a copy of the notebook beside ``data_root`` (so the
    Export tab's download links land there, not in the checkout's notebooks/downloads), behind
    ``token`` when one is given."""
    import shutil

    served = Path(data_root).parent / "notebooks"
    served.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "dashboard.ipynb", served / "dashboard.ipynb")
    env = {**os.environ, "DFLAB_DATA": str(data_root), "DFLAB_LAB_TOKEN": token,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "app.serve", str(served / "dashboard.ipynb"), "--ip=127.0.0.1",
         f"--port={port}", *voila_flags(cull_s)],
        cwd=served, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def serve_voila(data_root: Path, cull_s: int = 300, tries: int = 5, token: str = ""
                ) -> tuple[subprocess.Popen, int]:
    """(Voila, its port), listening: a free port is only free until someone takes it, so a
    Voila that exits before listening is started again on another one."""
    for _ in range(tries):
        port = free_port()
        proc = start_voila(port, data_root, cull_s, token)
        try:
            wait_port(port, proc)
            return proc, port
        except RuntimeError:  # exited: the port was taken meanwhile, or a real failure
            log = stop_voila(proc)
            if "already in use" not in log and "Address already" not in log:
                raise RuntimeError(f"voila exited before listening:\n{log[-3000:]}") from None
        except BaseException:
            stop_voila(proc)
            raise
    raise RuntimeError(f"no free port for voila in {tries} tries")


def stop_voila(proc: subprocess.Popen) -> str:
    """Stop Voila and return what it logged while serving.

    The log from the shutdown signal on is left out: a pre-heated kernel still running the
    notebook when Voila ends it logs ZMQ "socket closed" tracebacks that say nothing about
    the dashboard (seen in CI at stop 24)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # SIGTERM lets Voila end its kernels
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log = proc.stdout.read() if proc.stdout else ""
    return log.split("[Voila] Handle signal", 1)[0]


@pytest.mark.slow
def test_voila_serves_the_dashboard(tmp_path):
    proc, port = serve_voila(tmp_path / "data")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=300) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        assert "dflab" in body
    finally:
        log = stop_voila(proc)
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.168.1.20", "::", "gpu-box.lan"])
def test_serving_beyond_loopback_without_a_token_is_refused(host):
    from app.serve import voila_argv

    with pytest.raises(SystemExit) as err:
        voila_argv("dashboard.ipynb", host, 8866, "", [])
    msg = str(err.value)
    assert msg.startswith("dflab lab: error:") and "\n" not in msg and "DFLAB_LAB_TOKEN" in msg
    assert "--Voila.token=t0k" in voila_argv("dashboard.ipynb", host, 8866, "t0k", [])


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_serves_without_a_token_and_uses_one_when_given(host):
    from app.serve import voila_argv

    argv = voila_argv("dashboard.ipynb", host, 8866, "", ["--pool_size=1"])
    assert f"--Voila.ip={host}" in argv and "--pool_size=1" in argv
    assert not any(a.startswith("--Voila.token") for a in argv)
    assert "--Voila.token=t0k" in voila_argv("dashboard.ipynb", host, 8866, "t0k", [])


def test_make_lab_on_every_interface_without_a_token_stops_before_serving(tmp_path):
    """`make lab HOST=0.0.0.0` runs exactly this: it exits at once with the one-line refusal and
    never listens."""
    env = {k: v for k, v in os.environ.items() if k != "DFLAB_LAB_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "app.serve", str(ROOT / "notebooks" /
                          "dashboard.ipynb"), "--ip=0.0.0.0", f"--port={free_port()}"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().startswith("dflab lab: error: serving on 0.0.0.0"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Voil" not in out.stderr + out.stdout

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


def start_voila(port: int, data_root: Path, cull_s: int = 300) -> subprocess.Popen:
    """`make lab`'s Voila on ``port`` over a copy of the notebook beside ``data_root`` (so the
    Export tab's download links land there, not in the checkout's notebooks/downloads)."""
    import shutil

    voila = Path(sys.executable).parent / "voila"
    served = Path(data_root).parent / "notebooks"
    served.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "dashboard.ipynb", served / "dashboard.ipynb")
    env = {**os.environ, "DFLAB_DATA": str(data_root),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [str(voila), str(served / "dashboard.ipynb"), "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
         *voila_flags(cull_s)],
        cwd=served, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def serve_voila(data_root: Path, cull_s: int = 300, tries: int = 5
                ) -> tuple[subprocess.Popen, int]:
    """(Voila, its port), listening: a free port is only free until someone takes it, so a
    Voila that exits before listening is started again on another one."""
    for _ in range(tries):
        port = free_port()
        proc = start_voila(port, data_root, cull_s)
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

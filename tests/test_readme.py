"""The README's shell examples and those of the stage pages its stage table links (docs/*.md, in
the table's order) run as written, in order, on a small demo set; then the fused bundle they
make, copied alone to another folder, scores videos and face crops from a fresh clone of the
repository (another path, no ../shared)."""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

# lines the README marks as needing what this machine lacks (or what a fresh clone lacks: the
# shared sample data, whose own test is tests/test_real.py); `make` lines would run the suite (or
# the dashboard) from inside the suite
NEEDS = ("needs the internet", "needs GPUs", "needs ../shared/data")


def readme_commands(text: str) -> list[str]:
    """Every line of every ```bash block, continuation lines joined, minus the marked ones."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("make ") or \
                    any(n in line for n in NEEDS):
                continue
            cmds.append(line)
    return cmds


def stage_pages() -> list[Path]:
    """README.md, then the pages its "## Stages" table links, in the table's order."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Stages", 1)[1].split("\n## ", 1)[0].split("\n\n|", 1)[1]
    table = table.split("\n\n", 1)[0]
    links = re.findall(r"\]\((docs/[\w.-]+\.md)\)", table)
    return [ROOT / "README.md"] + [ROOT / link for link in dict.fromkeys(links)]


def documented_commands() -> list[str]:
    return [c for page in stage_pages() for c in readme_commands(page.read_text())]


def test_readme_blocks_are_found():
    pages = stage_pages()
    assert len(pages) >= 10 and all(p.is_file() for p in pages), pages
    cmds = documented_commands()
    assert any(c.startswith("dflab predict") and "--faces" in c for c in cmds)
    assert not any("download" in c.split()[:2] for c in cmds)  # network lines are skipped


#: a tiny timm model at 64 px for the README's training lines (the preset's resnet18 at 128 px
#: made its training and protocol lines 33 s of the test's 237)
TINY_MODEL = "model.backbone=test_efficientnet model.input_size=64 model.head_hidden=32"

#: what needs a real shell: globs, redirects, pipes, variables, command lists
SHELL = set("*?<>|$;&`")


def _run(cmd: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """``cmd`` as a user runs it: a plain ``dflab ...`` line through ``dflab.cli.main`` in this
    process (the same parser and code as the console script, without paying torch's import for
    each of the README's ~40 commands); anything with shell syntax through bash."""
    import contextlib
    import io
    import shlex

    if not cmd.startswith("dflab ") or SHELL & set(cmd.split("#", 1)[0]):
        return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=900)
    from dflab.cli import main

    argv = shlex.split(cmd, comments=True)[1:]
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    # main() configures logging as a console script does (a root handler on the stderr of the
    # moment, dflab's level): put it back, so later tests in this process see pytest's set-up
    root, ours = logging.getLogger(), logging.getLogger("dflab")
    handlers, root_level, our_level = root.handlers[:], root.level, ours.level
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's own errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = handlers
        root.setLevel(root_level)
        ours.setLevel(our_level)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "DFLAB_CACHE": str(tmp_path / "cache")}
    env.pop("DFLAB_DATA", None)  # the examples use ./data, as in a checkout
    work = tmp_path / "checkout"
    work.mkdir()
    # what `make lab` builds first, smaller: 30 one-second clips instead of 100 two-second ones
    out = _run("dflab demo-data --out data/demo --videos 30 --seconds 1", work, env)
    assert out.returncode == 0, out.stderr
    seconds = []  # each command's time, printed slowest first (pytest -rP shows it)
    for cmd in documented_commands():
        # one epoch of a tiny model, and three refinement steps: the suite checks learning, and
        # the refinement's front, elsewhere (tests/test_learning.py, tests/test_refine.py); the
        # settings go before the line's comment, or the shell would read them as part of it
        code = cmd.split(" #", 1)[0].rstrip()
        if cmd.startswith(("dflab train", "dflab protocol")):
            cmd = code + f" --set {TINY_MODEL} train.epochs=1 features.epochs=20"
        if cmd.startswith("dflab forensic refine"):
            cmd = code + " --max-steps 3"
        if cmd.startswith("dflab sync train"):
            cmd = code + " --set sync.epochs=3"
        t = time.monotonic()
        out = _run(cmd, work, env)
        seconds.append((time.monotonic() - t, cmd))
        assert out.returncode == 0, f"README example failed: {cmd}\n{out.stderr[-3000:]}"
    for s, cmd in sorted(seconds, reverse=True):
        print(f"{s:7.1f} s  {cmd}")

    data = work / "data"
    rows = list(csv.DictReader((data / "predictions.csv").open()))
    assert rows and all(r["prob_visual"] and r["verdict"] in ("real", "fake") for r in rows)
    batch = json.loads((data / "predictions.json").read_text())
    assert batch["model"]["overridden"] == {"every_nth": [3, 10]}
    fused = list(csv.DictReader((data / "fused.csv").open()))
    assert fused and all(r["prob_visual"] and r["prob_forensic"] and r["prob_fused"]
                         for r in fused)
    fused_av = json.loads((data / "runs" / "fuse-av" / "eval_test.json").read_text())
    assert {"visual", "forensic", "fused", "sync"} <= set(fused_av)
    assert fused_av["fused"]["stackers"]["visual + forensic + sync"] == 6  # every test clip
    scored = data / "runs" / "forensic-f1" / "predictions_all_mine.csv"
    assert scored.is_file() and "prob_logreg" in scored.read_text().splitlines()[0]

    # the fuse folder alone, on "another machine": a fresh clone at another path, no ../shared
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot make a fresh clone")
    other = tmp_path / "elsewhere"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(other / "clone")], check=True)
    bundle = other / "bundle"
    shutil.copytree(data / "runs" / "fuse-ff", bundle)
    videos, crops = other / "videos", other / "crops"
    shutil.copytree(data / "demo" / "original_sequences" / "youtube" / "c23" / "videos", videos)
    crops.mkdir()
    for k, crop in enumerate(sorted((data / "processed" / "demo" / "videos").rglob("crops/*.jpg"))[:6]):
        shutil.copy(crop, crops / f"{k}.jpg")
    shutil.rmtree(work)  # nothing of the training machine is left
    env2 = {**env, "PYTHONPATH": str(other / "clone"), "DFLAB_SHARED_DATA": str(other / "none")}
    for args in ([str(videos)], [str(crops), "--faces"]):
        out = _run(f"{sys.executable} -m dflab predict {' '.join(args)} --model {bundle} "
                   f"--report {other}/r.csv", other, env2)
        assert out.returncode == 0, out.stderr[-3000:]
        rows = list(csv.DictReader((other / "r.csv").open()))
        assert len(rows) == len(list(Path(args[0]).iterdir()))
        assert all(r["prob_visual"] and r["prob_forensic"] and r["prob_fused"] for r in rows)

"""Every notebook executes top to bottom (outputs are not committed)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from colab.make_env import colab_cell
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_have_no_committed_outputs():
    for nb_path in NOTEBOOKS:
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{nb_path.name} has committed outputs"


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(nb_path, tmp_path, monkeypatch):
    monkeypatch.setenv("DFLAB_DATA", str(tmp_path))
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors


@pytest.mark.network  # uv build fetches hatchling from the package index unless uv has it cached
@pytest.mark.slow
def test_the_colab_cell_installs_a_wheel_with_the_kernel_packages_held(tmp_path):
    import shutil
    import subprocess
    import types
    import zipfile
    from importlib import metadata

    uv = shutil.which("uv") or str(ROOT / ".uv" / "bin" / "uv")
    if not os.path.exists(uv):
        pytest.skip("no uv to build the wheel with (make test installs it into .uv/)")
    subprocess.run([uv, "build", "-q", "--wheel", "--out-dir", str(tmp_path)], cwd=ROOT,
                   check=True)  # what `make wheel` runs
    wheel = next(tmp_path.glob("dflab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"app/dashboard.py", "dflab/lab.py", "dflab/presets/cpu.yaml"} <= set(names)
    ns = colab_cell()
    assert ns["IN_COLAB"] is False  # outside Colab it installed nothing
    calls = []
    ns["subprocess"] = types.SimpleNamespace(run=lambda cmd, **kw: calls.append(cmd))
    ns["install_dflab"]("", "", wheel=str(wheel))
    (cmd,) = calls
    assert cmd[-1] == f"dflab[colab] @ {wheel.resolve().as_uri()}"
    held = open(cmd[cmd.index("-c") + 1]).read().split()
    for name in ("ipykernel", "ipython", "ipywidgets", "jupyter-client", "traitlets"):
        assert f"{name}=={metadata.version(name)}" in held, name
    with pytest.raises(FileNotFoundError, match="DFLAB_WHEEL.*make wheel"):
        ns["install_dflab"]("", "", wheel=str(tmp_path / "missing.whl"))

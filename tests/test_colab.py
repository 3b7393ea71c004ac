"""The dashboard on Colab's own kernel stack (tests/colab/stack.txt: ipywidgets 7.7.1, plotly
5.24.1, ipykernel 6.17.1, IPython 7.34.0, jupyter-client 6.1.12, traitlets 5.7.1).

These run in .venv-colab, which `make test` builds with tests/colab/make_env.py (dflab installed
by the notebook's own Colab cell) and runs beside tests/test_app.py and tests/test_notebooks.py.
In the main environment they skip.
"""

import os
from importlib import metadata

import nbformat
import pytest
from nbclient import NotebookClient

from colab.make_env import stack
from conftest import ROOT

STACK = os.environ.get("DFLAB_COLAB_STACK")
pytestmark = pytest.mark.skipif(
    not STACK, reason="runs in the Colab-versions environment: `make test` runs it in "
                      ".venv-colab (DFLAB_COLAB_STACK names its stack file)")


def test_installing_dflab_left_colabs_kernel_packages_as_they_were():
    for name, version in stack(STACK).items():
        assert metadata.version(name) == version, name
    assert metadata.version("dflab")  # and the lab is there, from the notebook's install cell


@pytest.mark.slow
def test_click_through_inside_a_running_kernel(tmp_path):
    """test_app's click-through, run in a Jupyter kernel: every widget update and figure goes
    through the kernel's own message serialisation (ipykernel 6.17's json_clean refuses numpy
    arrays, which an in-process test never sees)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import sys\nsys.path[:0] = [{str(ROOT / 'tests')!r}]"),
        nbformat.v4.new_code_cell(
            "from pathlib import Path\nfrom test_app import test_click_through_every_stage\n"
            f"test_click_through_every_stage(Path({str(tmp_path)!r}))\nprint('clicked through')"),
    ]
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "clicked through" in text and "Traceback" not in text, text

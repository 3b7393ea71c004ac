"""The layout the design asks for, and the rule that the backend never imports the UI."""

import subprocess
import sys
import tomllib

import yaml

from conftest import ROOT


def test_top_level():
    for name in ("app", "dflab", "notebooks", "tests", "environment.yml", "pyproject.toml",
                 "README.md", ".ci/run", "Makefile", "configs", "benchmarks", "uv.lock"):
        assert (ROOT / name).exists(), name


def test_backend_never_imports_the_ui():
    code = ("import sys, dflab, dflab.cli, dflab.core.environment, dflab.data.synthetic, dflab.core.runs\n"
            "bad = [m for m in ('ipywidgets', 'IPython', 'app') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    import re

    ui = re.compile(r"^\s*(import|from)\s+(ipywidgets|IPython|app)\b", re.M)
    for py in (ROOT / "dflab").rglob("*.py"):
        found = ui.search(py.read_text())
        assert found is None, f"{py} has '{found.group(0).strip()}'"


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["lab"]) | set(extras["landmarks"]) | \
        set(extras["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == wanted


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()

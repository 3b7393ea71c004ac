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


# The wings of dflab/ in the order data flows through them (dflab/__init__.py, docs/architecture.md)
# and the front door above them. An import may only point at its own wing or one listed before it.
ORDER = ["core", "data", ("visual", "forensic", "av"), "serve", "analysis", "workflows",
         ("lab", "cli", "__main__", "__init__")]


def _rank(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else "__init__"
    for rank, names in enumerate(ORDER):
        if part in ((names,) if isinstance(names, str) else names):
            return rank
    raise AssertionError(f"{module} is in no wing of ORDER")


def _imports() -> dict[str, dict[str, int]]:
    """module -> {dflab module it imports: line}, deferred imports included, imports under
    ``if TYPE_CHECKING:`` (for annotations only) left out."""
    import ast

    modules = {}
    for py in (ROOT / "dflab").rglob("*.py"):
        name = ".".join(py.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = py
    packages = {"dflab", *(f"dflab.{w}" for w in _wings())}  # their __init__ only documents
    found: dict[str, dict[str, int]] = {}
    for name, py in modules.items():
        tree = ast.parse(py.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        edges = found.setdefault(name, {})
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dflab"):
                named = [f"{node.module}.{a.name}" for a in node.names]  # modules by name
                targets = [t for t in named if t in modules] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t in modules and t != name and t not in packages:
                    edges.setdefault(t, node.lineno)
    return found


def _wings() -> list[str]:
    return [w for names in ORDER[:-1] for w in ((names,) if isinstance(names, str) else names)]


def test_every_import_points_down_the_wings_and_none_in_a_circle():
    """No module imports a later wing (or the front door), deferred imports included, and no
    modules import each other in a circle; annotations may name the Lab (type-only imports)."""
    graph = _imports()
    up = [f"{a}:{line} imports {b}" for a, edges in graph.items() for b, line in edges.items()
          if _rank(b) > _rank(a)]
    assert not up, "imports that point up the wings:\n" + "\n".join(up)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:  # depth-first; 1 = on the path, 2 = done
        state[node] = 1
        for nxt in graph.get(node, {}):
            assert state.get(nxt) != 1, "a circle of imports: " + " -> ".join(
                path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_a_function_over_60_lines_says_why():
    """dflab/ and app/ read top to bottom: a function longer than 60 lines carries a
    ``# Long on purpose: ...`` comment at its start saying why it stays whole."""
    import ast

    unexplained = []
    for folder in ("dflab", "app"):
        for py in (ROOT / folder).rglob("*.py"):
            lines = py.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                        node.end_lineno - node.lineno + 1 > 60:
                    head = lines[node.lineno - 1:node.lineno + 15]
                    if not any(ln.strip().startswith("# Long on purpose:") for ln in head):
                        unexplained.append(f"{py.relative_to(ROOT)}:{node.lineno} {node.name} "
                                           f"({node.end_lineno - node.lineno + 1} lines)")
    assert not unexplained, "split these, or say why they stay whole:\n" + "\n".join(unexplained)

"""Install dflab into the Colab-versions environment the way Colab does it.

Run with that environment's Python, after its Colab stack (stack.txt) is installed:
``.venv-colab/bin/python tests/colab/make_env.py --uv UV``. It runs the install code of
``notebooks/dashboard.ipynb``'s first cell itself (``install_dflab``: a clone of this repository
at HEAD, ``dflab[colab]`` with the kernel packages held), then checks that the Colab stack was
left as it was. Every other package is held at ``uv.lock``'s version, so the environment is
built from uv's cache rather than from whatever PyPI has newest.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def stack(path: str | Path = HERE / "stack.txt") -> dict[str, str]:
    """The pinned Colab stack: normalised name -> version."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[norm(name)] = version
    return pins


def colab_cell() -> dict:
    """The namespace of the dashboard notebook's first cell, run outside Colab: its
    definitions (``install_dflab``, ``KERNEL_PACKAGES``, ``IN_COLAB``), nothing installed."""
    cell = nbformat.read(ROOT / "notebooks" / "dashboard.ipynb", as_version=4).cells[0].source
    ns: dict = {}
    exec(compile(cell, "dashboard.ipynb[0]", "exec"), ns)
    return ns


def installed() -> dict[str, str]:
    return {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}


def lock_constraints(uv: str, out: Path) -> Path:
    """uv.lock's versions of every package the Colab stack did not bring (those stay Colab's)."""
    text = subprocess.run([uv, "export", "--frozen", "--no-hashes", "--all-extras",
                           "--no-emit-project", "--no-header"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    have = installed()
    keep = [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and norm(re.split(r"[=<>!~; \[]", line.strip())[0]) not in have]
    out.write_text("\n".join(keep) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uv", required=True, help="the uv binary")
    args = ap.parse_args()
    uv = str(Path(args.uv).resolve()) if os.sep in args.uv else args.uv
    venv = Path(sys.prefix)
    before = installed()
    os.environ["UV_CONSTRAINT"] = str(lock_constraints(uv, venv / "lock-constraints.txt"))
    os.environ["PATH"] = f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}"  # the cell finds uv
    ns = colab_cell()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    ns["install_dflab"](str(ROOT), head, where=str(venv / "src" / "dflab"))
    # the test runner and its per-test timeout, at uv.lock's versions
    subprocess.run([uv, "pip", "install", "-q", "--python", sys.executable, "pytest",
                    "pytest-timeout"], check=True)
    after = installed()
    moved = {name: (before.get(name), after.get(name)) for name in stack()
             if before.get(name) != after.get(name)}
    for name, (old, new) in moved.items():
        print(f"make_env: installing dflab[colab] changed Colab's {name} {old} -> {new}",
              file=sys.stderr)
    changed = sorted(n for n in before if n in after and before[n] != after[n])
    print(f"make_env: dflab {after.get('dflab')} installed at {head[:12]}; "
          f"{len(after) - len(before)} packages added, {len(changed)} of Colab's changed"
          f"{': ' + ', '.join(changed) if changed else ''}")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())

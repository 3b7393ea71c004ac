import os
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DFLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).parent / "fixtures"

# Under pytest-xdist each worker, and every process it starts, gets its share of the cores for
# torch's and BLAS's threads (set before either is imported). Left at one thread per core, two
# workers ran four OpenMP threads on two cores and their spin-waits doubled the time of training:
# a model that fits in 35 s alone took 94 s beside a second such process, 48-49 s with one thread
# each (test_explain's patch model, 2026-12-03).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = _SHARE

#: what the suite must leave as it found it: the checkout's data and download folders and the
#: user's dflab cache (tests write only in their temporary folders)
GUARDED = [ROOT / "data", ROOT / "notebooks" / "downloads",
           Path.home() / ".cache" / "dflab"]


#: the longest test files first (`make test` hands whole files to two workers as they free up;
#: the longest last would leave one worker idle at the end). Their times: docs/tests.md.
LONGEST_FIRST = ("test_browser.py", "test_kill_resume.py", "test_readme.py", "test_app.py",
                 "test_faces.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order in a file kept


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             every: float = 0.05) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.exists():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def isolated(tmp_path_factory):
    """Every dflab path a test does not set lands in this session's temporary folder: the data
    root ($DFLAB_DATA, which `make` points at the checkout's data/), the cache and the error
    logs; subprocesses inherit them. At the end, the guarded folders must be unchanged."""
    base = tmp_path_factory.mktemp("isolated")
    saved = {k: os.environ.get(k) for k in ("DFLAB_DATA", "DFLAB_CACHE", "DFLAB_LOG_DIR")}
    os.environ.update(DFLAB_DATA=str(base / "data"), DFLAB_CACHE=str(base / "cache"),
                      DFLAB_LOG_DIR=str(base / "logs"))
    before = {str(f): _snapshot(f) for f in GUARDED}
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    changed = [f for f in GUARDED if _snapshot(f) != before[str(f)]]
    assert not changed, f"the test session wrote into {changed}; tests must write only in " \
                        f"their temporary folders"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").exists():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (../shared/data beside the "
                    f"checkout); set DFLAB_SHARED_DATA to run these tests")
    return SHARED_DATA


@pytest.fixture(scope="session")
def yunet_weights(shared_data) -> Path:
    return shared_data / "weights" / "yunet" / "yunet_s_640_640.onnx"


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """A 30-clip, 1-second demo set, built once per test session."""
    from dflab.data.synthetic import build_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    build_demo_dataset(out, n_videos=30, seed=0, seconds=1.0)
    return out


# small, fast settings for runs made in tests (the demo set, a tiny timm model, two epochs)
TINY = {"env.seed": 0, "env.deterministic": True, "env.workers": 0,
        "preprocess.detector": "haar", "preprocess.every_nth": 5, "preprocess.audio": False,
        "model.backbone": "test_efficientnet", "model.pretrained": False,
        "model.input_size": 64, "model.head_hidden": 32, "train.epochs": 2,
        "train.batch_size": 8, "train.accumulation": 1, "train.lr": 1e-3, "eval.bootstrap": 50}


@pytest.fixture(scope="session")
def tiny_lab(demo_set, tmp_path_factory):
    """A Lab with TINY settings over its own copy of the demo set, preprocessed once."""
    from dflab import Lab

    root = tmp_path_factory.mktemp("tiny-lab")
    shutil.copytree(demo_set, root / "demo")
    lab = Lab(None, TINY, data_root=root)
    lab.preprocess("demo")
    return lab


def browser_required() -> bool:
    return os.environ.get("DFLAB_REQUIRE_BROWSER") == "1"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")

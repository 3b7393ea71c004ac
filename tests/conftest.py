import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DFLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).parent / "fixtures"


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
    from dflab.demo import build_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    build_demo_dataset(out, n_videos=30, seed=0, seconds=1.0)
    return out


def browser_required() -> bool:
    return os.environ.get("DFLAB_REQUIRE_BROWSER") == "1"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")

"""Drive the dashboard's widgets without a browser, against small real runs."""

import time

import pytest

pytest.importorskip("ipywidgets")

from app import Dashboard  # noqa: E402
from dflab.config import LabConfig  # noqa: E402


@pytest.fixture
def dash(tmp_path):
    cfg = LabConfig()
    cfg.model.backbone = "resnet18"
    return Dashboard(cfg, data_root=str(tmp_path))


def test_environment_tab(dash):
    html = dash.env_tab.info.value
    assert "CPU cores" in html and "Batch size" in html and "AMP" in html
    dash.env_tab.seed.value = 5
    dash.env_tab.apply_button.click()
    assert "seed" in dash.env_tab.runtime.value and dash.cfg.env.seed == 5
    titles = [dash.tab.get_title(i) for i in range(len(dash.tab.children))]
    assert titles[:2] == ["Environment", "Data"]


def test_demo_button_builds_the_set_in_a_thread(dash):
    tab = dash.data_tab
    tab.demo_videos.value = 4
    assert "No demo set" in tab.summary.value
    tab.demo_job.start.click()
    assert tab.demo_job.start.disabled  # disabled while the job runs
    tab.demo_job.wait(300)
    assert not tab.demo_job.error, tab.demo_job.error
    assert not tab.demo_job.start.disabled
    assert "30 clips" in tab.summary.value
    assert tab.demo_job.bar.value == tab.demo_job.bar.max


def test_cancel_keeps_finished_work(dash):
    tab = dash.data_tab
    tab.demo_job.start.click()
    time.sleep(0.5)
    tab.demo_job.cancel_button.click()
    tab.demo_job.wait(300)
    assert "cancelled" in tab.demo_job.status.value
    assert not tab.demo_job.start.disabled

"""The dashboard served by Voila and driven in headless Chromium with Playwright: from an empty
data folder through the start-here strip (demo data, preprocessing, a one-epoch tiny training
run with the live plot, evaluation, forensics, export), with inspect and the runs on the way.
Screenshots go to $DFLAB_SCREENSHOTS (default: a temporary folder)."""

import os
import re
import time
from pathlib import Path

import pytest

from conftest import browser_required, chromium_path, wait_for
from test_voila import serve_voila, stop_voila

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRESET = """
env: {seed: 0, workers: 0}
data: {demo_videos: 30}
preprocess: {detector: haar, every_nth: 5, audio: false, det_size: 320}
model: {backbone: test_efficientnet, pretrained: false, input_size: 64, head_hidden: 32}
train: {epochs: 1, batch_size: 8, accumulation: 1, lr: 1.0e-3, amp: "off"}
features: {epochs: 30}
sync: {epochs: 3}
"""


@pytest.fixture
def browser():
    exe = chromium_path()
    if exe is None:
        if browser_required():
            pytest.fail("Chromium is required here (DFLAB_REQUIRE_BROWSER=1) but not found; "
                        "apt-get install chromium")
        pytest.skip("no Chromium: apt-get install chromium (CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


def test_click_through_the_dashboard(browser, tmp_path):
    """A first-time user: an empty data folder, each next step taken from the start-here strip
    (which highlights it and opens its tab), up to an exported model."""
    shots = Path(os.environ.get("DFLAB_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    data.mkdir()
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    os.environ["DFLAB_CONFIG"] = str(preset)
    proc, port = serve_voila(data)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", lambda route: route.continue_()
                   if route.request.url.startswith(f"http://127.0.0.1:{port}")
                   else route.abort())  # offline: no CDN fonts or scripts
        page.set_default_timeout(240_000)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.get_by_text("dflab · deepfake detection lab", exact=True).wait_for()
        page.locator("th", has_text="Batch size").first.wait_for()
        page.screenshot(path=str(shots / "1-environment.png"), full_page=True)

        def tab(name):
            page.locator(".lm-TabBar-tab, .p-TabBar-tab").filter(has_text=name).first.click()

        def seen(text):
            """Wait for ``text`` on screen (a folded report may hold it too, hidden)."""
            page.locator(f"text={text} >> visible=true").first.wait_for()

        def next_step(label):
            """The strip names this step as the next one (highlighted); a click opens its tab."""
            page.locator(".mod-primary", has_text=label).wait_for()
            page.get_by_text(f"next: {label.split(' · ')[1]}").wait_for()
            page.get_by_role("button", name=label, exact=True).click()

        next_step("1 · videos")
        seen("No demo set yet")
        page.get_by_role("button", name="Build demo set").click()
        seen("30 clips")
        next_step("2 · face crops")
        page.get_by_role("button", name="Preprocess").click()
        seen("face coverage")
        page.screenshot(path=str(shots / "2-data.png"), full_page=True)

        next_step("3 · visual model")
        page.get_by_role("button", name="Train", exact=True).click()
        seen("Validation ROC")
        seen("val_auc")
        next_step("4 · test AUC")
        page.get_by_role("button", name="Evaluate on test").click()
        seen("Test results")
        page.screenshot(path=str(shots / "3-train.png"), full_page=True)

        next_step("5 · forensic features")
        page.get_by_role("button", name="Extract features").click()
        seen("features done")
        seen("Azimuthal power profile")  # explorer, first frame
        seen("Feature correlation")
        page.get_by_role("button", name="Train MLP").click()
        seen("SHAP values (impact on p(fake))")
        seen("Permutation importance")
        page.get_by_role("button", name="Fuse visual + forensic (+ audio)").click()
        seen("fuse done")
        page.locator("th:text-is('fused')").wait_for()  # the fused row of the results table
        # (the Train tab's table, hidden now, also says "bootstrap interval": take a visible one)
        page.locator("text=bootstrap interval >> visible=true").first.wait_for()
        page.screenshot(path=str(shots / "4-forensics.png"), full_page=True)

        tab("Inspect")
        page.get_by_role("button", name="Load predictions").click()
        seen("misclassified test frames match")
        page.get_by_role("button", name="all frames").click()  # not only what this run got wrong
        seen("test frames, right and wrong, match")
        page.locator("button", has_text=" p=").first.click()
        seen("forensic MLP p(fake)")
        seen("of the fake logit")  # the Grad-CAM overlay beside the crop
        page.screenshot(path=str(shots / "5-inspect.png"), full_page=True)

        next_step("6 · ONNX model")
        page.get_by_role("button", name="Export ONNX").click()
        page.locator("th", has_text="onnxruntime vs torch").wait_for()
        seen("every stage done")
        link = page.get_by_role("link", name=re.compile("Download model.onnx"))
        body = page.request.get(f"http://127.0.0.1:{port}" + link.get_attribute("href")).body()
        onnx = next((data / "runs").glob("train-*/model.onnx"))
        assert body == onnx.read_bytes()  # the model, served by Voila for download
        video = next((data / "demo" / "manipulated_sequences").rglob("*.mp4"))
        with page.expect_file_chooser() as chooser:  # ipywidgets 8 keeps its <input> detached
            page.get_by_role("button", name="Upload image/video").click()
        chooser.value.set_files(str(video))
        page.get_by_role("button", name="Predict", exact=True).click()
        seen("p(fake) per frame")
        page.screenshot(path=str(shots / "6-export.png"), full_page=True)

        tab("Runs")
        page.get_by_role("button", name="Refresh runs").click()
        page.locator("text=test AUC frame / video >> visible=true").first.wait_for()
        select = page.locator("select[multiple] >> visible=true").first
        values = select.locator("option").evaluate_all("os => os.map(o => o.value)")
        select.select_option(values[:2])  # two runs: their curves overlaid, settings compared
        # (the runs of this test share one config: the panel says so instead of a table)
        page.get_by_text(re.compile("Settings that differ|have the same settings")).wait_for()
        page.locator("text=Loss curves >> visible=true").first.wait_for()
        page.screenshot(path=str(shots / "7-runs.png"), full_page=True)

        # lip-sync: the talking set, its windows, the sync model, its scores; then one clip
        tab("Audio-visual")
        page.get_by_role("button", name="Build the talking demo set").click()
        seen("clips with sync windows")
        page.locator("text=/[1-9][0-9]* clips with sync windows/ >> visible=true").wait_for()
        page.get_by_role("button", name="Extract sync windows").click()
        seen("sync-extract done")
        page.get_by_role("button", name="Train the sync model").click()
        seen("sync-train done")
        page.get_by_role("button", name="Score the test clips").click()
        page.locator("th:text-is('sync score (learned)')").wait_for()
        clip = "demo_av/AudioShift/c23/101_101"
        page.locator("select", has=page.locator("option", has_text=clip)).select_option(
            label=clip)
        seen("learned: offset")
        seen("training-free (")
        seen("lip opening over the speech loudness")
        seen("audio offset (frames; + = sound early)")
        # the clip's view: the page scrolls inside Voila's body, so bring it into the window
        page.locator("text=mouth over time >> visible=true").first.scroll_into_view_if_needed()
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "8-audio-visual.png"))
        errors = page.locator("text=failed:").count()
        assert errors == 0
        text = page.locator("body").inner_text()
        assert "{'" not in text and "': " not in text, "a Python dict repr on the page"
        assert page.locator("[title='null']").count() == 0
        broken = page.evaluate("[...document.images].filter(i => i.complete && "
                               "i.naturalWidth === 0 && i.offsetParent !== null).length")
        assert broken == 0, f"{broken} broken images"
        page.set_viewport_size({"width": 900, "height": 1000})  # usable on a narrow window
        for name in ("Environment", "Data", "Train", "Forensics", "Audio-visual", "Inspect",
                     "Export", "Runs"):
            tab(name)
            page.wait_for_timeout(300)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 905, f"the {name} tab is {wide} px wide at 900 px"
            text = page.locator("body").inner_text()  # what this tab shows, folds closed
            assert "{'" not in text and "': " not in text, f"a Python dict repr on {name}"
        t0 = time.monotonic()  # an idle reload, the preheated kernel ready
        page.reload(wait_until="domcontentloaded")
        page.get_by_text("dflab · deepfake detection lab", exact=True).wait_for()
        print(f"time to first widget on an idle reload: {time.monotonic() - t0:.1f} s")
    finally:
        os.environ.pop("DFLAB_CONFIG", None)
        log = stop_voila(proc)
    assert "Traceback" not in log, log[-3000:]


def _kernels(proc) -> int:
    """ipykernel processes under the Voila server ``proc``."""
    import psutil

    n = 0
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:
            n += c.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(c.cmdline())
        except psutil.Error:  # ended meanwhile
            pass
    return n


def test_a_reload_mid_training_keeps_the_run_and_leaks_no_kernel(browser, tmp_path):
    """Start training, reload twice mid-run: each page shows the same run's live progress; the
    last one cancels it. Kernels of the closed pages are culled: one serves the page at the end
    (plus the one Voila keeps preheated). Time to the first widget is measured on each load."""
    import json

    from dflab.core.config import LabConfig
    from dflab.data.synthetic import build_demo_dataset
    from dflab.lab import Lab

    shots = Path(os.environ.get("DFLAB_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    build_demo_dataset(data / "demo", 12, 0, seconds=0.5)
    cfg = LabConfig()
    cfg.preprocess.detector, cfg.preprocess.every_nth, cfg.preprocess.audio = "haar", 5, False
    Lab(cfg, data_root=data).preprocess(source="demo")
    preset = tmp_path / "long.yaml"
    preset.write_text(PRESET.replace("epochs: 1,", "epochs: 300, patience: 300,"))
    os.environ["DFLAB_CONFIG"] = str(preset)
    cull_s = 15
    proc, port = serve_voila(data, cull_s=cull_s)
    timings = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", lambda route: route.continue_()
                   if route.request.url.startswith(f"http://127.0.0.1:{port}")
                   else route.abort())
        page.set_default_timeout(240_000)

        def load(first: bool) -> None:
            t0 = time.monotonic()
            if first:
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            else:
                page.reload(wait_until="domcontentloaded")
            page.get_by_text("dflab · deepfake detection lab", exact=True).wait_for()
            timings.append(time.monotonic() - t0)
            page.locator(".lm-TabBar-tab, .p-TabBar-tab").filter(has_text="Train").first.click()

        load(True)
        page.get_by_placeholder("run name (empty: timestamp)").fill("reload")
        page.get_by_role("button", name="Train", exact=True).click()
        live = page.locator("text=/train: \\d+\\/\\d+ batch/ >> visible=true").first
        live.wait_for()
        run = data / "runs" / "train-reload"

        def events() -> int:
            path = run / "events.jsonl"
            return len(path.read_text().splitlines()) if path.is_file() else 0

        for _ in range(2):  # reload mid-run, once the job has logged more: the same run, live
            seen = events()
            wait_for(lambda seen=seen: events() > seen + 2, 240,
                     "the training job to log progress")
            load(False)
            assert page.get_by_placeholder("run name (empty: timestamp)").input_value() == \
                "reload"
            live.wait_for()
        page.screenshot(path=str(shots / "9-reloaded-run.png"), full_page=True)
        assert json.loads((run / "status.json").read_text())["state"] == "running"
        page.locator("button:has-text('Cancel'):not([disabled]) >> visible=true").first.click()
        page.get_by_text("Train: cancelled").wait_for()
        assert json.loads((run / "status.json").read_text())["state"] == "cancelled"
        deadline = time.monotonic() + cull_s * 6
        while _kernels(proc) > 2 and time.monotonic() < deadline:  # the page's + the pool's
            time.sleep(1)
        kernels = _kernels(proc)
        print(f"time to first widget (s): {[round(t, 1) for t in timings]}; kernels at the end:"
              f" {kernels} (one serving the page, one preheated)")
        assert kernels <= 2, f"{kernels} kernels after three page loads"
        assert page.locator("text=failed:").count() == 0
    finally:
        os.environ.pop("DFLAB_CONFIG", None)
        log = stop_voila(proc)
        from dflab.core.jobs import list_jobs

        for job in list_jobs(data):  # a failed test must not leave training behind
            if job.running:
                job.cancel()
                job.wait(60)
    assert "Traceback" not in log, log[-3000:]


def test_a_served_lab_with_a_token_refuses_a_page_without_it(browser, tmp_path):
    """`make lab` with DFLAB_LAB_TOKEN set: a browser without the token gets Jupyter's login
    page, never the dashboard; with ``?token=`` it gets the dashboard."""
    import secrets

    token = secrets.token_urlsafe(16)
    proc, port = serve_voila(tmp_path / "data", token=token)
    try:
        page = browser.new_page()
        page.set_default_timeout(240_000)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        assert "/login" in page.url, page.url
        page.locator("input[type=password]").first.wait_for()  # it asks for the token
        assert page.get_by_text("dflab · deepfake detection lab").count() == 0
        refused = page.request.get(f"http://127.0.0.1:{port}/?token=wrong{token}",
                                   max_redirects=0)
        assert refused.status in (302, 403) and "/login" in refused.headers.get("location", "/login")
        page.goto(f"http://127.0.0.1:{port}/?token={token}", wait_until="domcontentloaded")
        page.get_by_text("dflab · deepfake detection lab", exact=True).wait_for()
    finally:
        log = stop_voila(proc)
    assert token not in " ".join(proc.args), "the token must not be on the command line"
    assert "Traceback" not in log, log[-3000:]


def test_colab_plot_fallback_draws_where_host_scripts_do_not_run(browser):
    """The HTML fallback that Colab gets: inserted with innerHTML (scripts in it never run, as
    in a widget output that does not execute them), the iframe still draws the plot. The CDN is
    served from plotly's bundled plotly.min.js, since this machine is offline."""
    import plotly
    import plotly.graph_objects as go

    from app.widgets import figure_iframe

    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[0.2, 0.5, 0.4], name="val loss"))
    fig.update_layout(title="Loss", height=300)
    page = browser.new_page()
    page.route("https://cdn.plot.ly/**", lambda route: route.fulfill(
        body=js.read_bytes(), content_type="application/javascript"))
    page.set_content("<div id='out'></div>")
    page.evaluate("h => { document.getElementById('out').innerHTML = h; }", figure_iframe(fig))
    frame = page.frame_locator("iframe")
    frame.locator(".main-svg").first.wait_for(timeout=60_000)
    assert frame.locator(".scatterlayer .trace").count() == 1
    assert "Loss" in frame.locator(".gtitle").text_content()

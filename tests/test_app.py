"""Drive the dashboard's widgets without a browser, against small real runs."""

import time
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from app import Dashboard  # noqa: E402
from conftest import wait_for  # noqa: E402
from dflab.core.config import LabConfig  # noqa: E402


@pytest.fixture
def dash(tmp_path):
    cfg = LabConfig()
    cfg.model.backbone = "resnet18"
    return Dashboard(cfg, data_root=str(tmp_path))


def test_environment_tab(dash):
    html = dash.environment_tab.info.value
    assert "CPU cores" in html and "Batch size" in html and "AMP" in html
    dash.environment_tab.seed.value = 5
    dash.environment_tab.apply_button.click()
    assert "seed" in dash.environment_tab.runtime.value and dash.lab.cfg.env.seed == 5
    titles = [dash.tab.get_title(i) for i in range(len(dash.tab.children))]
    assert titles == ["Environment", "Data", "Train", "Forensics", "Audio-visual", "Inspect",
                      "Export", "Runs"]


@pytest.mark.slow
def test_demo_button_builds_the_set_in_its_own_process(dash):
    tab = dash.data_tab
    tab.demo_videos.value = 30
    assert "No demo set" in tab.summary.value
    assert tab.sources.selected_index == 0  # the section that builds it is open
    tab.demo_job.start.click()
    assert tab.demo_job.start.disabled  # disabled while the job runs
    tab.demo_job.wait(300)
    assert not tab.demo_job.error, tab.demo_job.error
    assert not tab.demo_job.start.disabled
    assert "30 clips" in tab.summary.value
    assert tab.demo_job.bar.value == tab.demo_job.bar.max


def test_cancel_keeps_finished_work(dash, tmp_path):
    """Cancelled after three clips (watched on its progress bar, not after a sleep): the job
    says so, the clips finished by then stay whole, nothing half-written is left."""
    from dflab.data.video import count_frames

    tab = dash.data_tab
    tab.demo_videos.value = 100  # far more than can finish between the click and the cancel
    tab.demo_job.start.click()
    deadline = time.monotonic() + 120
    while tab.demo_job.bar.value < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tab.demo_job.bar.value >= 3, "three clips within two minutes"
    tab.demo_job.cancel_button.click()
    tab.demo_job.wait(300)
    assert not tab.demo_job.thread.is_alive()
    assert "cancelled" in tab.demo_job.status.value, tab.demo_job.status.value
    assert not tab.demo_job.start.disabled
    clips = sorted((tmp_path / "demo").rglob("*.mp4"))
    assert 3 <= len(clips) < 100
    assert len({count_frames(c) for c in clips}) == 1  # every kept clip is whole
    assert not [p for p in (tmp_path / "demo").rglob("*") if ".part" in p.name]


def test_the_data_folder_changes_only_by_its_button_after_a_check(dash, tmp_path):
    env = dash.environment_tab
    new = tmp_path / "elsewhere" / "lab"
    for partial in ("elsewh", "elsewhere/la", "elsewhere/lab"):  # typing creates nothing
        env.data_root.value = str(tmp_path / partial)
    assert not (tmp_path / "elsewh").exists() and not new.exists()
    assert dash.lab.paths["data_root"] == tmp_path
    env.root_button.click()
    assert dash.lab.paths["data_root"] == new and (new / "runs").is_dir()
    assert str(new) in env.root_note.value and str(new) in dash.context.info.value
    env.data_root.value = "/proc/dflab-here"  # neither existing nor creatable here
    env.root_button.click()
    assert "does not exist" in env.root_note.value or "cannot be created" in env.root_note.value
    assert dash.lab.paths["data_root"] == new and not Path("/proc/dflab-here").exists()
    (tmp_path / "afile").write_text("x")
    env.data_root.value = str(tmp_path / "afile")
    env.root_button.click()
    assert "is a file" in env.root_note.value


def test_without_a_gpu_the_cpu_preset_is_proposed(tmp_path):
    from app.dashboard import initial_config

    cfg, preset, note = initial_config(gpu=False)
    assert preset == "cpu" and "No GPU" in note and cfg.model.backbone == "resnet10t"
    cfg, preset, _ = initial_config(gpu=True)
    assert preset == "default" and cfg.model.backbone == "efficientnet_b4"
    dash = Dashboard(*initial_config(gpu=False), data_root=str(tmp_path))
    tab = dash.train_tab
    assert tab.preset.value == "cpu" and "No GPU" in tab.preset_note.value
    assert tab.model_form.inputs["backbone"].value == "resnet10t"
    tab.preset.value = "colab_t4"  # switching presets fills the forms and the lab config
    assert dash.lab.cfg.train.amp == "fp16" and tab.train_form.inputs["amp"].value == "fp16"
    assert tab.model_form.inputs["backbone"].value == "efficientnet_b4"
    assert dash.lab.cfg.env.data_root == str(tmp_path)  # the environment stays
    assert dash.data_tab.pre_form.inputs["detector"].value == "yunet"


def test_bad_dfdc_parts_are_shown_not_raised(dash):
    tab = dash.data_tab
    tab.dfdc_parts.value = "0,one"
    tab.dfdc_job.start.click()
    assert "one" in tab.dfdc_job.status.value and "color:#b00" in tab.dfdc_job.status.value
    assert not tab.dfdc_job.running and not tab.dfdc_job.start.disabled


def test_preprocessing_panel_takes_a_scheduler_address(dash):
    tab = dash.data_tab
    tab.cluster_form.inputs["cluster"].value = "10.0.0.5"  # no scheme: not an address
    tab.pre_job.start.click()
    tab.pre_job.wait(120)
    assert dash.lab.cfg.env.cluster == "10.0.0.5"
    assert "tcp://HOST:8786" in tab.pre_job.status.value + tab.pre_job.error


@pytest.mark.slow
def test_click_through_every_stage(tmp_path):
    """Demo set -> preprocess -> train (live plots) -> evaluate -> inspect -> forensics ->
    export -> predict, all by clicking, then a fresh dashboard re-reads the run from disk."""
    import shutil

    from conftest import ROOT  # noqa: F401
    from dflab.data.synthetic import build_demo_dataset

    build_demo_dataset(tmp_path / "demo", 30, 0, seconds=1.0)
    cfg = LabConfig()
    dash = Dashboard(cfg, data_root=str(tmp_path))
    data = dash.data_tab
    assert "30 clips" in data.summary.value
    data.pre_form.inputs["detector"].value = "haar"
    data.pre_form.inputs["every_nth"].value = 5
    data.pre_form.inputs["audio"].value = False
    data.pre_job.start.click()
    data.pre_job.wait(300)
    assert not data.pre_job.error, data.pre_job.error
    assert "face coverage" in data.stats_html.value and len(data.stats_plots.outputs) >= 4
    assert "{" not in data.stats_html.value and "fake " in data.stats_html.value  # no dict repr

    tr = dash.train_tab
    tr.model_form.inputs["backbone"].value = "test_efficientnet"
    tr.model_form.inputs["pretrained"].value = False
    tr.model_form.inputs["input_size"].value = 64
    tr.train_form.inputs["epochs"].value = 2
    tr.train_form.inputs["batch_size"].value = 8
    tr.train_form.inputs["accumulation"].value = 1
    tr.name.value = "ui"
    tr.job.start.click()
    assert tr.job.start.disabled and not tr.job.cancel_button.disabled
    tr.job.wait(600)
    assert not tr.job.error, tr.job.error
    assert len(tr._epochs) == 2 and tr.loss_plot.outputs and tr.roc_plot.outputs
    assert "val_auc" in tr.metrics.value
    plot = tr.loss_plot.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert len(plot["data"]) == 3  # step loss, epoch train loss, val loss
    tr.eval_job.start.click()
    tr.eval_job.wait(300)
    assert not tr.eval_job.error, tr.eval_job.error
    assert "Test results" in tr.per_method.value and "frame AUC" in tr.per_method.value
    assert "bootstrap interval" in tr.per_method.value

    ins = dash.inspect_tab
    ins.refresh_button.click()
    assert ins.preds is not None and "misclassified" in ins.summary.value
    assert set(ins.filters["method"].options) >= {"all", "original"}
    ins.min_margin.value = 0.0  # every frame misclassified at the run's threshold
    preds = ins.preds  # whatever this run learned: the gallery shows its wrong frames, no more
    n_wrong = int((preds["pred"] != preds["target"]).sum())
    assert sum(ins.counts.values()) == n_wrong
    assert len(ins.gallery.children) == min(24, n_wrong)
    ins.which.value = "all frames"  # every test frame, most wrong first
    assert sum(ins.counts.values()) == len(preds) and len(ins.gallery.children) == 24
    first = ins.gallery.children[0].children[1].description
    worst = preds.loc[preds["wrong_by"].idxmax()]
    assert first == f"{worst['method'][:10]} p={worst['prob']:.2f}"
    ins.gallery.children[0].children[1].click()
    assert "visual model p(fake)" in ins.detail.value and "no forensic run" in ins.detail.value
    from dflab.data.landmarks import dlib_available  # haar boxes: dlib's 68 points, or none to fit

    assert ("68 points (dlib68)" in ins.detail.value) == dlib_available(), ins.detail.value
    assert ins.frame_image.value[:2] == b"\xff\xd8" and ins.crop_image.value[:2] == b"\xff\xd8"
    assert ins.cam_image.value[:2] == b"\xff\xd8" and "Grad-CAM</b> of the fake logit" in \
        ins.cam_note.value
    first_cam = ins.cam_image.value
    ins.cam_method.value = "gradcam++"  # the selected frame again, with Grad-CAM++
    assert "Grad-CAM++" in ins.cam_note.value and ins.cam_image.value != first_cam
    ins.filters["method"].value = "original"
    assert all("original" in b.children[1].description for b in ins.gallery.children)

    fo = dash.forensics_tab
    fo.feat_job.start.click()
    fo.feat_job.wait(300)
    assert not fo.feat_job.error, fo.feat_job.error
    assert fo.frame.options and len(fo.feature.options) == 52
    assert fo.feature.value == "fft_grid_peak_2"  # the default, not the first (ipywidgets 7)
    fo.frame.value = fo.frame.options[1][1]
    assert [len(c.outputs) for c in fo.explorer_cells] == [1] * 6
    fo.feature.value = "fft_grid_peak_2"
    assert [len(c.outputs) for c in fo.dataset_cells] == [1] * 3
    dash.lab.cfg.features.epochs = 20
    fo.mlp_job.start.click()
    fo.mlp_job.wait(300)
    assert not fo.mlp_job.error, fo.mlp_job.error
    assert "video AUC" in fo.results.value and len(fo.explain_plots.outputs) == 2
    assert "mlp" in fo.results.value and "logreg" in fo.results.value
    fo.fuse_job.start.click()  # the fused verdict beside the two models, with intervals
    fo.fuse_job.wait(300)
    assert not fo.fuse_job.error, fo.fuse_job.error
    for name in ("visual", "forensic", "fused", "bootstrap interval", "videos"):
        assert name in fo.fused.value, name
    fo.refine_steps.value = 2  # feature-set refinement: the front, a point picked and saved
    fo.refine_job.start.click()
    fo.refine_job.wait(300)
    assert not fo.refine_job.error, fo.refine_job.error
    assert fo.refine_plot.outputs and "Pareto front" in fo.refine_note.value
    other = next(v for _, v in fo.front.options if v != fo.front.value)
    fo.front.value, fo.subset_name.value = other, "ui-pick"
    fo.save_point.click()
    assert "saved <b>ui-pick</b>" in fo.refine_note.value
    assert (tmp_path / "feature_sets" / "ui-pick.json").is_file()
    ins.refresh_button.click()  # now with the forensic MLP's score beside the visual one
    assert ins.filters["method"].value == "original"  # a refresh keeps the user's filter
    ins.gallery.children[0].children[1].click()
    assert "forensic MLP p(fake)" in ins.detail.value and "no forensic run" not in ins.detail.value

    ex = dash.export_tab
    ex.job.start.click()
    ex.job.wait(300)
    assert not ex.job.error, ex.job.error
    assert "parity" in ex.result.value and "ok" in ex.result.value
    video = next((tmp_path / "demo").rglob("*.mp4"))
    ex.predict(video)  # scored in the Predict panel's worker thread
    ex.predict_job.wait(300)
    assert not ex.predict_job.error, ex.predict_job.error
    res = ex.prediction
    assert res and res["verdict"] in ("real", "fake") and ex.plot.outputs
    assert set(res.data["probabilities"]) == {"visual", "forensic", "fused"}  # the fuse run is used
    assert "forensic: p(fake)" in ex.verdict.value

    again = Dashboard(LabConfig(), data_root=str(tmp_path))  # a kernel restart
    assert again.train_tab.run_select.value == "train-ui"
    assert len(again.train_tab._epochs) == 2 and "Test results" in again.train_tab.per_method.value
    steps = again.context.steps  # every stage's files are there: the strip says so
    assert steps.states() == [True] * 6, list(zip([s.name for s, _ in steps.steps], steps.states()))
    assert "every stage done" in steps.next.value
    runs = dash.runs_tab  # two runs compared: curves overlaid, settings that differ
    runs.refresh()
    assert "train-ui" in runs.table.value and "forensic-" in runs.table.value
    picked = [v for label, v in runs.select.options if "(train," in label or "(forensic," in label]
    runs.select.value = tuple(picked)
    assert len(runs.plots.outputs) == 2 and "Settings that differ" in runs.diff.value
    loss = runs.plots.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert len({t["name"].split()[0] for t in loss["data"]}) == 2  # both runs' curves
    fuse = next(v for label, v in runs.select.options if "(fuse," in label)
    runs.select.value = (fuse,)  # robustness of the fused detector, from the tab
    runs.robust_job.start.click()
    runs.robust_job.wait(600)
    assert not runs.robust_job.error, runs.robust_job.error
    assert runs.robust_plot.outputs and "fused frame" in runs.robust_out.value
    copy = tmp_path / "copy"  # a cross-dataset protocol: train on demo, test on another folder
    shutil.copytree(dash.data_tab.processed, copy)
    runs.protocol_kind.value, runs.protocol_name.value = "cross-dataset", "ui-xd"
    runs.test_on.value = str(copy)
    runs.protocol_job.start.click()
    runs.protocol_job.wait(600)
    assert not runs.protocol_job.error, runs.protocol_job.error
    assert "cross-dataset: video AUC" in runs.protocol_out.value
    assert runs.select.value == (str(tmp_path / "runs" / "protocol-ui-xd"),)
    assert len(runs.plots.outputs) == 3  # loss, ROC and the protocol's heatmap

    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def test_inspect_shows_every_frame_misclassified_at_the_runs_threshold(tmp_path):
    """A run whose tuned threshold is 0.64: a fake at p = 0.6 is misclassified though
    |p - label| < 0.5. Inspect lists every such frame, with counts per method equal to the
    evaluation report's."""
    import numpy as np
    import pandas as pd

    from dflab.core.metrics import evaluate_predictions
    from dflab.core.runs import create_run_dir, write_report

    from dflab.lab import Lab

    cfg = LabConfig()
    cfg.data.source = "demo"
    processed = Lab(cfg, data_root=tmp_path).processed_dir(source="demo")
    rng = np.random.default_rng(0)
    rows = []
    for v in range(12):
        method, label = (("original", "real") if v < 4 else
                         (("Deepfakes", "FaceSwap")[v % 2], "fake"))
        for f in range(5):
            crop = f"crops/{method}/{v:03d}_{f}.jpg"
            (processed / crop).parent.mkdir(parents=True, exist_ok=True)
            (processed / crop).write_bytes(b"\xff\xd8\xff\xd9")
            rows.append({"uid": f"{method}/{v:03d}", "dataset": "demo", "method": method,
                         "compression": "c23", "video_id": f"{v:03d}", "split": "test",
                         "frame_index": f, "label": label, "target": int(label == "fake"),
                         "prob": float(rng.uniform(0.45, 0.8)), "crop_path": crop,
                         "frame_path": "", "x1": "", "y1": "", "x2": "", "y2": ""})
    frames = pd.DataFrame(rows)
    threshold = 0.64
    run = create_run_dir(tmp_path / "runs", "train", LabConfig(), "thr", env_report={},
                         processed=processed)
    report = evaluate_predictions(frames, threshold, n_boot=0)
    write_report(run, "test", {"visual": report})
    preds = frames.assign(pred=(frames["prob"] >= threshold).astype(int),
                          wrongness=(frames["prob"] - frames["target"]).abs())
    preds.to_csv(run / "predictions_test.csv", index=False)
    wrong = preds[preds["pred"] != preds["target"]]
    assert (wrong["wrongness"] < 0.5).any()  # the frames a 0.5-based filter hid

    dash = Dashboard(cfg, data_root=str(tmp_path))
    assert dash.session.run == run
    ins = dash.inspect_tab
    ins.refresh_button.click()
    assert ins.threshold == threshold and "threshold 0.640" in ins.summary.value
    assert sum(ins.counts.values()) == len(wrong)
    for method, rep in report["frame_per_method"].items():  # each method's fakes vs all reals
        missed = round(rep["n_fake"] * (1 - rep["recall"]))
        assert ins.counts.get(method, 0) == missed, method
    overall = report["frame"]
    wrong_real = round(overall["n"] * (1 - overall["accuracy"])) - sum(
        round(r["n_fake"] * (1 - r["recall"])) for r in report["frame_per_method"].values())
    assert ins.counts.get("original", 0) == wrong_real
    ins.filters["method"].value = "Deepfakes"
    assert set(ins.counts) == {"Deepfakes"}
    assert len(ins.gallery.children) == min(24, ins.counts["Deepfakes"])


@pytest.mark.slow
def test_a_training_job_outlives_the_page_and_a_new_page_cancels_it(tmp_path):
    """Training runs detached: a second dashboard (a reload, a restarted kernel) finds the
    running job, follows its live losses, cancels it; the runs list then says cancelled."""
    from dflab.data.synthetic import build_demo_dataset
    from dflab.lab import Lab

    build_demo_dataset(tmp_path / "demo", 12, 0, seconds=0.5)
    cfg = LabConfig()
    cfg.preprocess.detector, cfg.preprocess.every_nth, cfg.preprocess.audio = "haar", 5, False
    cfg.model.backbone, cfg.model.pretrained, cfg.model.input_size = "test_efficientnet", False, 64
    cfg.train.epochs, cfg.train.batch_size, cfg.train.patience = 200, 4, 200
    Lab(cfg, data_root=tmp_path).preprocess(source="demo")
    first = Dashboard(cfg, data_root=str(tmp_path))
    first.train_tab.name.value = "long"
    first.train_tab.job.start.click()
    job = first.train_tab.job.job
    assert job is not None and job.folder == tmp_path / "runs" / "train-long"

    second = Dashboard(LabConfig(), data_root=str(tmp_path))  # the page after a reload
    tr = second.train_tab
    assert tr.job.job is not None and tr.job.job.folder == job.folder and tr.job.running
    assert tr.name.value == "long" and not tr.job.cancel_button.disabled
    # live, from the log: the curves and the status line are set by the same event on the
    # follower's thread, the status after the curves, so both are waited for (checking the
    # status once the curves had filled failed in a fresh-clone run, 2026-12-04)
    def live() -> bool:
        return bool(tr._steps and tr._epochs) and ("epoch" in tr.job.status.value
                                                   or "step" in tr.job.status.value)

    wait_for(live, 300, f"the second page to show the job's live losses and progress (the "
             f"job's log: {job.folder / 'job.log'})")
    tr.job.cancel_button.click()
    tr.job.wait(120)
    first.train_tab.job.wait(60)
    assert job.state == "cancelled" and "cancelled" in tr.job.status.value
    assert "cancelled" in first.train_tab.job.status.value  # the old page saw it end too
    assert "cancelled" in second.runs_tab.table.value
    assert tr.run_select.options[0] == ("train-long · cancelled", "train-long")
    third = Dashboard(LabConfig(), data_root=str(tmp_path))  # a finished run: its full curves
    assert third.train_tab._steps and len(third.train_tab._epochs) >= 1
    assert third.train_tab._roc.get("fpr") and not third.train_tab.job.running


def test_rates_get_a_log_slider_and_bounds_come_from_the_metadata():
    """A learning rate (bounds over decades) is a log slider that keeps the exact value set;
    ints and other floats are bounded by their field's min and max; apply writes them back."""
    import ipywidgets as W

    from app.widgets import ConfigForm
    from dflab.core.config import LabConfig, load_config

    cfg = LabConfig()
    form = ConfigForm(cfg.train, "train")
    lr = form.inputs["lr"]
    assert isinstance(lr, W.FloatLogSlider)
    assert lr.base == 10 and lr.min == -8 and lr.max == 0 and lr.value == cfg.train.lr
    assert isinstance(form.inputs["epochs"], W.BoundedIntText) and form.inputs["epochs"].min == 1
    lr.value = 3e-4
    form.apply(cfg)
    assert cfg.train.lr == 3e-4
    form.load(load_config("cpu").train)  # a preset fills the slider with its own rate
    assert lr.value == load_config("cpu").train.lr
    assert isinstance(ConfigForm(cfg.features, "features").inputs["lr"], W.FloatLogSlider)
    assert isinstance(ConfigForm(cfg.model, "model").inputs["dropout"], W.BoundedFloatText)


def test_advanced_settings_sit_in_a_closed_section_and_still_apply(dash):
    """The Train tab shows the common settings; the rest are in a closed "Advanced settings"
    section whose fields are read like the others."""
    form = dash.train_tab.train_form
    acc = form.advanced
    assert acc is not None and acc.selected_index is None  # closed
    inside = {w for row in acc.children[0].children for w in row.children}
    assert form.inputs["warmup_epochs"] in inside and form.inputs["epochs"] not in inside
    assert form.inputs["lr"] not in inside
    form.inputs["warmup_epochs"].value = 3
    form.apply(dash.lab.cfg)
    assert dash.lab.cfg.train.warmup_epochs == 3
    assert dash.data_tab.pre_form.advanced is not None
    assert dash.train_tab.model_form.advanced is not None


def test_start_here_marks_the_stages_done_and_opens_the_next_one(dash):
    """On an empty data folder every stage is to do and the first is the next step; each file a
    stage leaves marks it done; a click on a stage opens its tab."""
    steps = dash.context.steps
    assert steps.states() == [False] * 6
    steps.show()
    assert steps.buttons[0].button_style == "primary" and "<b>videos</b>" in steps.next.value
    steps.buttons[2].click()
    assert dash.tab.get_title(dash.tab.selected_index) == "Train"
    processed = dash.data_tab.processed
    (dash.lab.paths["data_root"] / "demo").mkdir(parents=True)
    (dash.lab.paths["data_root"] / "demo" / "labels.csv").write_text("path,label,split,method\n")
    processed.mkdir(parents=True)
    (processed / "index.csv").write_text("uid\n")
    (processed / "features.csv").write_text("uid\n")
    dash.session.changed("runs")  # what every job's end says
    assert steps.states() == [True, True, False, False, True, False]
    assert steps.buttons[0].description == "✓ · videos" and steps.buttons[2].description == "3 · visual model"
    assert steps.buttons[2].button_style == "primary" and "the Train tab" in steps.next.value
    steps.buttons[steps.states().index(False)].click()
    assert dash.tab.get_title(dash.tab.selected_index) == "Train"


def test_new_options_keep_the_choice():
    import ipywidgets as W

    from app.widgets import set_options

    w = W.Dropdown(options=["a", "b"], value="b")
    set_options(w, ["c", "b", "a"])
    assert w.value == "b"  # ipywidgets 7 alone would select "c"
    set_options(w, [("x one", "x"), ("y one", "y")], "y")
    assert w.value == "y"
    set_options(w, ["p", "q"])  # the old value is gone: the first option
    assert w.value == "p"


def test_results_are_cards_and_errors_one_line_with_details(tmp_path):
    from dflab.core.results import EvalResult, TrainResult

    from app.widgets import error_html, result_card

    res = TrainResult(tmp_path / "runs" / "train-x", 2, 0.6931, 3, False, 12.0)
    card = result_card("Train", res, tmp_path)
    assert "Train: done" in card and "runs/train-x" in card and str(tmp_path) not in card
    assert "<details>" not in card  # one line: nothing to fold
    rep = {"threshold": 0.5, "frame": {"n": 10, "accuracy": 0.9, "auc": 0.95, "f1": 0.9,
                                       "ece": 0.01}, "video": {"n": 2, "accuracy": 1.0,
                                                               "auc": 1.0, "f1": 1.0},
           "video_per_method": {}}
    card = result_card("Evaluate", EvalResult(tmp_path / "runs" / "r", "test", {"visual": rep}),
                       tmp_path)
    assert card.count("<details>") == 1 and "full report" in card and "auc=0.950" in card
    err = error_html("Train failed: no crops in data/x\nsecond line", "Traceback (most recent...")
    assert err.split("<details>")[0].count("color:#b00") == 1 and "second line" not in \
        err.split("<details>")[0]
    assert "Traceback" in err.split("<details>")[1]
    assert "<details>" not in error_html("just one line")


@pytest.mark.slow
def test_train_tab_shows_pseudo_fake_triples(tmp_path):
    """Real | self-blended pseudo-fake | mask of four training crops, from the folder's own
    landmarks; without a processed folder, a clear error instead."""
    from dflab.data.synthetic import build_demo_dataset
    from dflab.lab import Lab

    dash = Dashboard(LabConfig(), data_root=str(tmp_path))
    dash.train_tab.show_pseudo_fakes()
    assert "run `dflab preprocess` first" in dash.train_tab.sbi_note.value
    build_demo_dataset(tmp_path / "demo", 12, 0, seconds=0.5)
    Lab(None, {"preprocess.audio": False, "preprocess.every_nth": 5}, data_root=tmp_path
        ).preprocess("demo")
    dash = Dashboard(LabConfig(), data_root=str(tmp_path))
    dash.train_tab.show_pseudo_fakes()
    triples = dash.train_tab.sbi_samples.children
    assert len(triples) == 4 and all(len(t.children) == 3 for t in triples)
    real, fake, mask = (im.value for im in triples[0].children)
    assert real[:2] == fake[:2] == mask[:2] == b"\xff\xd8" and real != fake
    assert "pseudo-fake" in dash.train_tab.sbi_note.value


def _widgets(w):
    """Every widget under ``w`` (``w`` too)."""
    yield w
    for child in getattr(w, "children", ()):
        yield from _widgets(child)


def test_every_tab_declares_itself_and_the_dashboard_is_built_from_the_declarations(dash):
    """The tab registry drives the dashboard: each tab has a unique title, its job panels sit in
    its own widget tree, and the start-here strip is the tabs' steps in tab order."""
    from app.jobs import JobPanel
    from app.tabs import TABS

    assert [type(t) for t in dash.tabs] == TABS
    titles = [t.title for t in dash.tabs]
    assert len(set(titles)) == len(titles) and all(titles)
    for tab in dash.tabs:
        inside = {id(w) for w in _widgets(tab.widget)}
        for panel in tab.job_panels:
            assert isinstance(panel, JobPanel) and id(panel.widget) in inside, (tab.title, panel)
    assert dash.panels() == [p for t in dash.tabs for p in t.job_panels]
    steps = dash.context.steps
    assert [(s.name, t.title) for s, t in steps.steps] == \
        [(s.name, t.title) for t in dash.tabs for s in t.steps]
    assert [s.name for s, _ in steps.steps] == ["videos", "face crops", "visual model",
                                                "test AUC", "forensic features", "ONNX model"]


def test_the_session_tells_the_tabs_what_changed_and_nothing_when_nothing_did(dash, tmp_path):
    session, heard = dash.session, []
    session.observe(heard.append)
    session.select(dataset=session.dataset)  # the same: no change
    assert heard == []
    (tmp_path / "processed" / "demo_av").mkdir(parents=True)  # a folder that is no source's
    (tmp_path / "processed" / "demo_av" / "index.csv").write_text("uid\n")
    session.select(dataset="demo_av")
    assert heard == [{"dataset", "clip"}] and session.processed == tmp_path / "processed" / "demo_av"
    assert dash.context.source.value == "demo_av"  # the context bar follows the session
    assert dash.data_tab.source.value == "demo"  # the Data tab keeps its source
    run = tmp_path / "runs" / "train-x"
    session.select(run=run, clip="a/b")
    assert heard[-1] == {"run", "clip"} and session.run == run and session.clip == "a/b"
    session.select(run=None)
    assert heard[-1] == {"run"} and session.run is None
    with pytest.raises(ValueError, match="unknown change"):
        session.changed("everything")


def test_settings_forms_are_applied_by_stage_from_any_tab(dash):
    """The Runs tab's protocol takes the model and training settings as the Train tab's forms
    hold them, without reading the Train tab: the session applies the forms of a stage."""
    from app.jobs import JobPanel

    panel = JobPanel("x")
    dash.train_tab.train_form.inputs["epochs"].value = 3
    assert dash.session.apply(panel, "model", "train") and dash.lab.cfg.train.epochs == 3
    dash.data_tab.dfdc_form.inputs["dfdc_parts"].value = "x,y"  # not part numbers
    assert dash.session.apply(panel, "model", "train")  # other stages are not read
    assert not dash.session.apply(panel, "data") and "data.dfdc_parts" in panel.status.value

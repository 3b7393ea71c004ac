"""The dflab dashboard: one ipywidgets Tab per stage over the ``dflab`` backend (Environment
here; the others in ``tabs.py``).

Works with ipywidgets 7.7 (Colab) and 8 (Voila): titles are set with ``set_title``.
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as W

from dflab.config import LabConfig
from dflab.environment import environment_report, in_colab, mount_drive, resolve_paths, \
    setup_runtime

from .tabs import DataTab, ExportTab, ForensicsTab, InspectTab, TrainTab
from .widgets import table_html


class EnvironmentTab:
    def __init__(self, dash: "Dashboard"):
        self.dash = dash
        cfg = dash.cfg
        self.info = W.HTML("")
        self.refresh_button = W.Button(description="Refresh", icon="refresh")
        self.seed = W.BoundedIntText(value=cfg.env.seed, min=0, max=2**31 - 1, description="seed")
        self.deterministic = W.Checkbox(value=cfg.env.deterministic, description="deterministic")
        self.workers = W.BoundedIntText(value=cfg.env.num_workers, min=-1, max=64,
                                        description="workers")
        self.apply_button = W.Button(description="Apply runtime settings")
        self.runtime = W.HTML("")
        self.data_root = W.Text(value=str(dash.paths["data_root"]), description="data root",
                                layout=W.Layout(width="60%"))
        self.drive_button = W.Button(description="Mount Google Drive", icon="hdd",
                                     layout=W.Layout(display="" if in_colab() else "none"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.apply_button.on_click(lambda _: self.apply())
        self.drive_button.on_click(lambda _: self.mount())
        self.data_root.observe(self._root_changed, "value")
        self.widget = W.VBox([
            W.HTML("<h3>GPU and machine</h3>"), self.refresh_button, self.info,
            W.HTML("<h3>Runtime</h3>"), W.HBox([self.seed, self.deterministic, self.workers]),
            self.apply_button, self.runtime,
            W.HTML("<h3>Data</h3>"), W.HBox([self.data_root, self.drive_button]),
        ])
        self.report: dict = {}

    def refresh(self) -> None:
        cfg = self.dash.cfg
        self.report = rep = environment_report(self.dash.paths["data_root"], cfg.model.backbone,
                                               cfg.model.input_size or 380,
                                               cfg.train.target_batch)
        t = rep["torch"]
        rows: list[tuple[str, object]] = [
            ("CPU cores", rep["cpu_cores"]),
            ("RAM free / total", f"{rep['ram_available_gb']} / {rep['ram_total_gb']} GiB"),
            ("Disk free at data root", f"{rep['disk_free_gb']} GiB"),
            ("Colab", rep["colab"]), ("torch", t["version"]),
            ("CUDA / cuDNN", f"{t['cuda_version'] or '-'} / {t['cudnn_version'] or '-'}")]
        for g in rep["nvidia_smi"]:
            rows.append((f"GPU {g['index']}", f"{g['name']} · {g['memory_free_mib']}/"
                         f"{g['memory_total_mib']} MiB free · driver {g['driver']} · "
                         f"cc {g['capability']}"))
        if not rep["nvidia_smi"]:
            rows.append(("GPU", rep["nvidia_smi_note"] or "none"))
        a, f = rep["advice"], rep["advice_for"]
        rows += [("Advice for", f"{f['backbone']} at {f['input_size']} px, effective batch "
                                f"{f['target_batch']}"),
                 ("Batch size", a["batch_size"]), ("Gradient accumulation", a["accumulation"]),
                 ("AMP", a["amp"]), ("Why", a["reason"])]
        self.info.value = table_html(rows)

    def apply(self) -> None:
        settings = setup_runtime(self.seed.value, self.deterministic.value,
                                 self.dash.cfg.train.amp, self.workers.value)
        self.dash.cfg.env.seed = self.seed.value
        self.dash.cfg.env.deterministic = self.deterministic.value
        self.dash.cfg.env.num_workers = self.workers.value
        self.runtime.value = table_html(settings)

    def mount(self) -> None:
        root = mount_drive() / "dflab"
        self.data_root.value = str(root)

    def _root_changed(self, change) -> None:
        self.dash.set_data_root(change["new"])


class Dashboard:
    """``Dashboard().widget`` is the whole app; ``show()`` displays it."""

    def __init__(self, cfg: LabConfig | None = None, preset: str = "", preset_note: str = "",
                 data_root: str = ""):
        self.cfg = cfg or LabConfig()
        self.preset, self.preset_note = preset, preset_note
        if data_root:
            self.cfg.env.data_root = data_root
        self.paths = resolve_paths(self.cfg.env.data_root, self.cfg.env.runs_dir,
                                   use_drive=self.cfg.env.mount_drive)
        self.env_tab = EnvironmentTab(self)
        self.data_tab = DataTab(self)
        self.train_tab = TrainTab(self)
        self.forensics_tab = ForensicsTab(self)
        self.inspect_tab = InspectTab(self)
        self.export_tab = ExportTab(self)
        self.tabs = [("Environment", self.env_tab), ("Data", self.data_tab),
                     ("Train", self.train_tab), ("Forensics", self.forensics_tab),
                     ("Inspect", self.inspect_tab), ("Export", self.export_tab)]
        self.tab = W.Tab(children=[t.widget for _, t in self.tabs])
        for i, (title, _) in enumerate(self.tabs):
            self.tab.set_title(i, title)
        self.header = W.HTML("<h2>dflab · deepfake detection lab</h2>")
        self.widget = W.VBox([self.header, self.tab])
        self.env_tab.refresh()

    def use_config(self, cfg: LabConfig, preset: str = "") -> None:
        """Take every stage of ``cfg`` but the environment (data root, seed, workers stay) and
        show it in the forms."""
        for stage in ("data", "preprocess", "features", "model", "train", "eval", "export"):
            setattr(self.cfg, stage, getattr(cfg, stage))
        self.preset = preset
        self.data_tab.pre_form.load(self.cfg.preprocess)
        self.data_tab.demo_videos.value = self.cfg.data.demo_videos
        self.train_tab.model_form.load(self.cfg.model)
        self.train_tab.train_form.load(self.cfg.train)
        self.train_tab.preset_note.value = f"preset <b>{preset}</b> loaded"

    def set_data_root(self, root: str) -> None:
        self.cfg.env.data_root = root
        self.paths = resolve_paths(root, self.cfg.env.runs_dir, self.cfg.env.mount_drive)
        self.data_tab.show_summary()
        self.data_tab.show_stats()

    def state(self) -> dict:
        return {"data_root": str(self.paths["data_root"]), "env": self.env_tab.report}

    def show(self):
        from IPython.display import display

        display(self.widget)
        return self


def show(data_root: str = "", config: str = "") -> Dashboard:
    """Build and display the dashboard (the notebook's one call). ``config``: a YAML preset;
    defaults to ``$DFLAB_CONFIG`` when set."""
    import os


    return Dashboard(*initial_config(config or os.environ.get("DFLAB_CONFIG", "")),
                     data_root=data_root).show()


def initial_config(config: str = "", gpu: bool | None = None) -> tuple[LabConfig, str, str]:
    """(config, preset name, a line saying why) for a new dashboard: the given YAML file or
    preset, else the preset that learns on the hardware at hand (``cpu`` without a GPU)."""
    from dflab.config import default_preset, load_config, preset_path

    if config:
        return load_config(config), Path(config).stem, f"config <b>{config}</b>"
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    preset = default_preset(gpu)
    note = ("GPU found: the <b>default</b> preset (EfficientNet-B4, ImageNet weights)" if gpu
            else "No GPU found: the <b>cpu</b> preset is proposed (resnet10t at 112 px from "
                 "scratch; learns the demo set in about two minutes on 2 cores)")
    return load_config(preset_path(preset)), preset, note

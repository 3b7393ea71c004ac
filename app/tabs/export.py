"""The Export tab: the selected run as ONNX (a fuse run as a self-contained bundle), and a
verdict on an uploaded image or video."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as W

from dflab.core.environment import in_colab

from ..jobs import JobPanel
from ..session import Session
from ..widgets import icon, show_figure, table_html, under_root
from .base import Step, Tab


def download_html(path: str | Path) -> str:
    """Under Voila (``make lab``): a link to ``path`` served by Voila's file handler, through a
    hard link (or a copy) in ``downloads/`` beside the served notebook (the kernel's working
    folder: ``notebooks/downloads`` for ``make lab``), the only folder ``make lab`` lets it
    serve; elsewhere an empty string (Colab gets a download button instead)."""
    import os

    base = os.environ.get("VOILA_BASE_URL")
    path = Path(path)
    if base is None or not path.is_file():
        return ""
    name = f"{path.parent.name}-{path.name}"
    downloads = Path.cwd() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    link = downloads / name
    link.unlink(missing_ok=True)
    try:  # a hard link costs no space; Voila refuses symbolic links that leave its folder
        os.link(path, link)
    except OSError:  # another file system
        import shutil

        shutil.copy2(path, link)
    href = f"{base.rstrip('/')}/voila/files/downloads/{name}"
    return (f"<p><a href='{html.escape(href)}' download='{html.escape(path.name)}'>"
            f"⬇ Download {html.escape(path.name)}</a> ({path.stat().st_size / 2**20:.1f} MiB)</p>")


class ExportTab(Tab):
    """ONNX export of the selected run, and a verdict on an uploaded image or video with that
    run's best model (its fuse run when there is one: visual, forensic and fused)."""

    title = "Export"
    steps = (Step("ONNX model", lambda s: s.run is not None and (s.run / "model.onnx").exists()),)

    def __init__(self, session: Session):
        super().__init__(session)
        self.job = JobPanel("Export ONNX")
        self.job.start.on_click(lambda _: self.export())
        self.job.on_done.append(lambda res: self.show_export(res))
        self.result = W.HTML("")
        self.upload = W.FileUpload(accept="image/*,video/*", multiple=False,
                                   description="Upload image/video",
                                   layout=W.Layout(width="auto"))
        self.upload_name = W.HTML("")
        self.upload.observe(lambda _: self._show_upload(), "value")
        self.predict_job = JobPanel("Predict")
        self.predict_job.start.on_click(lambda _: self.predict())
        self.predict_job.on_done.append(lambda res: self.show_prediction(res))
        self.predict_button = self.predict_job.start
        self.prediction: Any = None
        self.verdict = W.HTML("")
        self.plot = W.Output()
        self.exported: Path | None = None
        self.colab_download = W.Button(description="Download the model", icon=icon("download"),
                                     layout=W.Layout(display="none"))
        self.colab_download.on_click(lambda _: self.save_to_colab())
        self.widget = W.VBox([self.job.widget, self.result, self.colab_download,
                              W.HTML("<h3>Predict</h3>"),
                              W.HBox([self.upload, self.upload_name]),
                              self.predict_job.widget, self.verdict, self.plot])
        self.job_panels = [self.job, self.predict_job]

    def export(self) -> None:
        run = self.session.run
        if run is None:
            self.job.status.value = "train a model first"
            return
        self.job.run(self.session.lab.export, run=run)

    def show_export(self, res: Any) -> None:
        self.result.value = table_html([
            ("file", under_root(res.onnx, self.session.paths["data_root"])),
            ("size", f"{res.bytes / 2**20:.1f} MiB"),
            ("onnxruntime vs torch max |diff|", f"{res.max_abs_diff:.2e}"),
            ("parity", "ok" if res.parity_ok else "FAILED")]) + download_html(res.onnx)
        self.exported = Path(res.onnx)
        self.colab_download.layout.display = "" if in_colab() else "none"

    def save_to_colab(self) -> None:
        """Colab: the browser's download of the exported model (google.colab.files)."""
        from google.colab import files  # only offered on Colab

        if self.exported is not None:
            files.download(str(self.exported))

    def _show_upload(self) -> None:
        up = self._uploaded()
        self.upload_name.value = (f"&nbsp;<b>{html.escape(up[0])}</b> "
                                  f"({len(up[1]) / 2**20:.1f} MiB)" if up else "")

    def _uploaded(self) -> tuple[str, bytes] | None:
        v = self.upload.value
        if not v:
            return None
        if isinstance(v, dict):  # ipywidgets 7
            name, item = next(iter(v.items()))
            return name, bytes(item["content"])
        item = v[0]
        return item["name"], bytes(item["content"])

    def predict(self, path: Path | None = None) -> None:
        """Start scoring ``path`` (default: the uploaded file) in the Predict panel."""
        run = self.session.run
        if run is None:
            self.predict_job.status.value = "train a model first"
            return
        if path is None:
            up = self._uploaded()
            if up is None:
                self.predict_job.status.value = "upload an image or a video first"
                return
            path = self.session.paths["cache"] / "uploads" / Path(up[0]).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(up[1])
        self.prediction = None
        self.predict_job.run(self.session.lab.predict, file=path, model=run)

    def show_prediction(self, res: Any) -> None:
        import plotly.graph_objects as go

        self.prediction = res
        p = "-" if res.probability is None else f"{res.probability:.3f}"
        per_model = "".join(f"<br>{html.escape(m)}: p(fake) = {v:.3f}"
                            for m, v in (res.data.get("probabilities") or {}).items())
        self.verdict.value = (f"<h3>{html.escape(res.verdict.upper())}</h3> p(fake) = {p} "
                              f"(threshold {res['threshold']:.3f}, {res['backend']}, "
                              f"{html.escape(Path(res['model']).name)}){per_model}")
        frames = res["frames"]
        fig = go.Figure(go.Scatter(x=[f["frame_index"] for f in frames],
                                   y=[f["prob"] for f in frames], mode="lines+markers",
                                   name="fused" if per_model else "visual"))
        for key, name in (("prob_visual", "visual"), ("prob_forensic", "forensic")):
            if frames and key in frames[0]:
                fig.add_trace(go.Scatter(x=[f["frame_index"] for f in frames],
                                         y=[f[key] for f in frames], mode="lines", name=name))
        fig.add_hline(y=res["threshold"], line_dash="dot")
        fig.update_layout(title="p(fake) per frame", xaxis_title="frame", yaxis_range=[0, 1],
                          height=300)
        show_figure(self.plot, fig)

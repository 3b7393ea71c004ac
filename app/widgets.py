"""Widget helpers: forms built from the config dataclasses, and plotly figures shown in Output
widgets from any thread (works on ipywidgets 7.7 and 8)."""

from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import ipywidgets as W

from dflab.core.config import ConfigError, field_type


class _Bundle:
    """A ready mime bundle for ``Output.append_display_data`` (IPython formats it as given)."""

    def __init__(self, data: dict):
        self.data = data

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data


IPYWIDGETS_7 = int(W.__version__.split(".")[0]) < 8
TOOLTIP = "description_tooltip" if IPYWIDGETS_7 else "tooltip"
# Button icons by meaning: ipywidgets 8's front end draws Font Awesome 5 names, 7's (Colab's)
# Font Awesome 4.7 names, and a name one of them lacks draws nothing
_ICONS = {"refresh": ("refresh", "sync"), "drive": ("hdd-o", "hdd"), "save": ("floppy-o", "save"),
          "check": ("check", "check"), "download": ("download", "download"),
          "eye": ("eye", "eye")}


def icon(meaning: str) -> str:
    """The Font Awesome name for ``meaning`` on this ipywidgets' front end."""
    return _ICONS[meaning][0 if IPYWIDGETS_7 else 1]


def figure_iframe(fig: Any) -> str:
    """The figure as a self-contained page in an ``<iframe srcdoc>``, loading plotly.js from its
    CDN. Inside the iframe the scripts run in document order, so plotly.js is loaded before the
    plot is drawn; a host that inserts output HTML without running its scripts (the cause of
    "Plotly is not defined" in Colab's widget outputs, colabtools #5889) still shows the plot."""
    page = fig.to_html(include_plotlyjs="cdn", full_html=True, default_width="100%",
                       default_height=f"{fig.layout.height or 450}px")
    height = (fig.layout.height or 450) + 20
    width = f"{fig.layout.width + 20}px" if fig.layout.width else "100%"
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="border:0;width:{width};'
            f'height:{height}px" title="{html.escape(fig.layout.title.text or "plot")}"></iframe>')


def show_figure(out: W.Output, fig: Any, replace: bool = True) -> None:
    """Put a plotly figure into ``out``: plotly's own mime type (rendered by plotly's JupyterLab
    extension under Voila and JupyterLab) plus an HTML fallback for hosts without that renderer
    (Colab, classic notebooks; see ``figure_iframe``). Safe from worker threads: no
    ``with out:``."""
    import json

    # plotly's own JSON encoder: plain lists, never numpy arrays (which a kernel's message
    # serialisation may refuse, e.g. ipykernel 6.17's json_clean on Colab)
    bundle = {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
              "text/html": figure_iframe(fig),
              "text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"}
    if replace:
        out.outputs = ()
    out.append_display_data(_Bundle(bundle))


def under_root(path: Any, root: Any) -> str:
    """``path`` relative to the data root when it lies under it (how the dashboard names
    files), else as it is."""
    from pathlib import Path

    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _option_values(options: Any) -> list:
    """The values of a selection widget's options (plain, or ``(label, value)`` pairs)."""
    return [o[1] if isinstance(o, tuple) else o for o in options]


def set_options(w: W.widgets.widget_selection._Selection, options: list,
                value: Any = None) -> None:
    """Give a single-choice selection widget new ``options``, then select ``value`` when it is
    one of them, else the value it had when it still is, else the first option. ipywidgets 7
    selects the first option whenever options are set (and 8 keeps or drops the value), so
    setting ``options`` alone would reset a user's choice, or a default, on every refresh.
    Observers may see the first option for a moment on 7."""
    values = _option_values(options)
    old = w.value
    if list(w.options) != list(options):
        w.options = options
    want = value if value in values else old if old in values else \
        values[0] if values else None
    if want is not None and w.value != want:
        w.value = want


def hide_while_empty(image: W.Image) -> W.Image:
    """Hide ``image`` while it has no bytes (an empty Image is a broken-image icon)."""
    def toggle(change: dict) -> None:
        image.layout.display = "" if change["new"] else "none"

    image.layout.display = "" if image.value else "none"
    image.observe(toggle, "value")
    return image


def table_html(rows: list[tuple[str, Any]] | dict) -> str:
    items = rows.items() if isinstance(rows, dict) else rows
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
                   f"<td>{html.escape(_fmt(v))}</td></tr>" for k, v in items)
    return f"<table>{body}</table>"


def error_html(message: Any, details: str = "") -> str:
    """A backend error message, escaped, as one red line; ``details`` (a traceback, a log's
    tail) folded under it, opened on demand."""
    text = str(message).strip()
    line = text.splitlines()[0] if text else "failed"
    more = (text[len(line):].strip() + "\n" + details).strip()
    fold = (f"<details><summary style='cursor:pointer;font-size:12px;color:#455a64'>details"
            f"</summary><pre style='font-size:11px;white-space:pre-wrap'>"
            f"{html.escape(more)}</pre></details>") if more else ""
    return f"<span style='color:#b00'>{html.escape(line)}</span>{fold}"


def result_card(title: str, result: Any, root: Any = None) -> str:
    """A finished job as a card: its title and the result's first line (the numbers that
    matter; paths relative to the data root ``root``), the full report folded under it."""
    text = "" if result is None or type(result).__str__ is object.__str__ or \
        isinstance(result, dict) else str(result)
    if root:
        text = text.replace(f"{root}/", "")
    first, _, rest = text.partition("\n")
    card = (f"<div style='border-left:4px solid #2e7d32;padding:2px 8px;margin:2px 0'>"
            f"<b>✓ {html.escape(title)}: done</b>"
            f"{' · ' + html.escape(first[:300]) if first else ''}")
    if rest.strip() or len(first) > 300:
        card += (f"<details><summary style='cursor:pointer;font-size:12px;color:#455a64'>full "
                 f"report</summary><pre style='font-size:11px;white-space:pre-wrap'>"
                 f"{html.escape(text)}</pre></details>")
    return card + "</div>"


def auc_text(m: dict) -> str:
    """'0.974 [0.949, 0.994]' (the 95% bootstrap interval when the report has one)."""
    from dflab.core.metrics import format_auc

    return format_auc(m)


def report_table(reports: dict[str, dict]) -> str:
    """Evaluation reports side by side (e.g. visual, forensic, fused): frame and video AUC with
    their intervals, the counts they rest on, accuracy at the validation-tuned threshold."""
    first = next(iter(reports.values()))
    head = (f"<p>test split: {first['video'].get('n_videos', first['video']['n'])} videos, "
            f"{first['frame'].get('n_frames', first['frame']['n'])} frames; AUC with its 95% "
            f"bootstrap interval (videos resampled)</p>")
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(name)}</th>"
        f"<td style='padding-right:1em'>{auc_text(r['frame'])}</td>"
        f"<td style='padding-right:1em'>{auc_text(r['video'])}</td>"
        f"<td style='padding-right:1em'>{r['video']['accuracy']:.3f}</td>"
        f"<td style='padding-right:1em'>{r['threshold']:.3f}</td>"
        + "".join(f"<td style='padding-right:1em'>{_tpr_at(r['frame'], k)}</td>"
                  for k in ("fpr_0.01", "fpr_0.1")) + "</tr>" for name, r in reports.items())
    return (head + "<table><tr><th></th><th>frame AUC</th><th>video AUC</th>"
            "<th>video accuracy</th><th>threshold (val)</th><th>frame TPR at FPR 1%</th>"
            "<th>at FPR 10%</th></tr>" + rows + "</table>")


def _tpr_at(m: dict, key: str) -> str:
    op = m.get("operating_points", {}).get(key)
    return f"{op['tpr']:.3f} (p &ge; {op['threshold']:.3f})" if op else "n/a"


def _fmt(v: Any) -> str:
    """A table cell in words: numbers to 4 digits, a dict as "key value · key value", a list
    comma-separated (never a Python repr)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return " · ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


# the form labels in words (with units); a field not listed shows its name with spaces
LABELS = {
    "env.seed": "Random seed", "env.deterministic": "Deterministic cuDNN",
    "env.workers": "Loader workers", "env.cluster": "Dask scheduler",
    "data.source": "Source", "data.root": "Videos folder", "data.demo_videos": "Demo clips",
    "data.methods": "Methods", "data.compressions": "Compressions",
    "data.videos_per_split": "Videos per split", "data.dfdc_parts": "DFDC parts",
    "data.max_disk_gb": "Disk budget (GB)",
    "preprocess.detector": "Face detector", "preprocess.detector_weights": "Detector weights",
    "preprocess.every_nth": "Every Nth frame", "preprocess.num_frames": "Frames per video",
    "preprocess.decode": "Decoder",
    "preprocess.padding": "Crop padding (× box)", "preprocess.min_confidence": "Min. face score",
    "preprocess.workers": "Worker processes", "preprocess.save_frames": "Save full frames",
    "preprocess.audio": "Audio features",
    "model.backbone": "Backbone (timm)", "model.pretrained": "ImageNet weights",
    "model.weights_path": "Weights file", "model.input_size": "Input size (px)",
    "model.head_hidden": "Head hidden units", "model.dropout": "Dropout",
    "train.epochs": "Epochs", "train.batch_size": "Batch size (images)",
    "train.accumulation": "Grad. accumulation", "train.lr": "Learning rate",
    "train.warmup_epochs": "Warm-up epochs", "train.loss": "Loss",
    "train.label_smoothing": "Label smoothing", "train.focal_gamma": "Focal loss γ",
    "train.amp": "Mixed precision", "train.augment": "Augment crops",
    "train.aug_color": "Colour jitter", "train.aug_jpeg_p": "JPEG re-encode prob.",
    "train.patience": "Early stop (epochs)", "train.balance": "Balance real/fake",
}


def _log_scale(meta: Any) -> bool:
    """A float whose bounds span three decades or more above zero (learning rates)."""
    lo, hi = meta.get("min"), meta.get("max")
    return lo is not None and hi is not None and lo > 0 and hi / lo >= 1e3


def field_label(stage: str, name: str) -> str:
    return LABELS.get(f"{stage}.{name}", name.replace("_", " ").capitalize())


class ConfigForm:
    """Widgets for the fields of one config stage, built from the dataclass metadata: a label
    in words, the bounds as the widget's own limits, and the field's help line beside it."""

    def __init__(self, stage_cfg: Any, stage: str, only: list[str] | None = None,
                 advanced: list[str] | None = None):
        """``only``: these fields (default all); ``advanced``: those of them shown in a closed
        "Advanced settings" section under the others."""
        self.stage, self.cfg = stage, stage_cfg
        self.inputs: dict[str, W.Widget] = {}
        rows, more = [], []
        style = {"description_width": "150px"}
        for f in dataclasses.fields(stage_cfg):
            if only and f.name not in only:
                continue
            meta, kind, value = f.metadata, field_type(f), getattr(stage_cfg, f.name)
            label = field_label(stage, f.name)
            kw = dict(description=label, style=style,
                      layout=W.Layout(width="340px", min_width="340px"))
            kw[TOOLTIP] = meta.get("help", "") or label
            if kind is bool:
                w = W.Checkbox(value=value, indent=False, **{k: v for k, v in kw.items()
                                                            if k != "style"})
            elif "choices" in meta:
                w = W.Dropdown(options=list(meta["choices"]), value=value, **kw)
            elif kind is int:
                w = W.BoundedIntText(value=value, min=meta.get("min", -2**31),
                                     max=meta.get("max", 2**31 - 1), **kw)
            elif kind is float and _log_scale(meta):
                # a rate over decades (1e-7 .. 1): a slider in log10 steps of 0.05 (12%), the
                # value written out as a number
                w = W.FloatLogSlider(value=value, base=10, min=math.log10(meta["min"]),
                                     max=math.log10(meta["max"]), step=0.05,
                                     readout_format=".2e", **kw)
            elif kind is float:
                w = W.BoundedFloatText(value=value, min=meta.get("min", -1e12),
                                       max=meta.get("max", 1e12), step=None, **kw)
            elif kind is list and "item_choices" in meta:
                w = W.SelectMultiple(options=list(meta["item_choices"]), value=tuple(value),
                                     rows=min(6, len(meta["item_choices"])), **kw)
            elif kind is list:
                w = W.Text(value=",".join(str(v) for v in value), **kw)
            else:
                w = W.Text(value=str(value), **kw)
            self.inputs[f.name] = w
            help_ = W.HTML(f"<span style='font-size:11px;color:#666;line-height:1.2'>"
                           f"{html.escape(meta.get('help', ''))}</span>",
                           layout=W.Layout(width="300px", margin="0 0 0 8px"))
            (more if advanced and f.name in advanced else rows).append(
                W.HBox([w, help_], layout=W.Layout(align_items="center")))
        self.advanced: W.Accordion | None = None
        if more:
            self.advanced = W.Accordion(children=[W.VBox(more)], selected_index=None)
            self.advanced.set_title(0, f"Advanced settings ({len(more)})")
            rows.append(self.advanced)
        self.widget = W.VBox(rows)

    def load(self, stage_cfg: Any) -> None:
        """Show the values of ``stage_cfg`` (a preset was chosen)."""
        self.cfg = stage_cfg
        for name, w in self.inputs.items():
            value = getattr(stage_cfg, name)
            if isinstance(w, W.SelectMultiple):
                w.value = tuple(value)
                continue
            w.value = ",".join(str(v) for v in value) if isinstance(value, list) else (
                value if isinstance(w, (W.Checkbox, W.Dropdown, W.BoundedIntText,
                                        W.BoundedFloatText, W.FloatLogSlider)) else str(value))

    def overrides(self) -> dict[str, Any]:
        return {f"{self.stage}.{k}": w.value for k, w in self.inputs.items()}

    def apply(self, lab_cfg) -> None:
        """Validate and write the form's values into ``lab_cfg`` (raises ConfigError)."""
        from dflab.core.config import set_value

        for key, value in self.overrides().items():
            set_value(lab_cfg, key, value)


__all__ = ["show_figure", "table_html", "error_html", "hide_while_empty", "ConfigForm", "ConfigError", "report_table",
           "auc_text"]

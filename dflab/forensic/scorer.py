"""The trained forensic models as plain arrays (``forensic_model.npz``): written by
:func:`dflab.forensic.model.train_forensic`, read by :class:`ForensicScorer` for inference with
NumPy alone (no torch, no scikit-learn), so a bundle predicts on any machine."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dflab.core.files import reading
from dflab.core.metrics import softmax_fake

__all__ = ["FORENSIC_FILE", "ForensicScorer", "save_forensic"]

FORENSIC_FILE = "forensic_model.npz"


def save_forensic(path: str | Path, mlp: Any, logreg: Any, names: list[str],
                  thresholds: dict[str, float], crop_size: int = 0) -> Path:
    """The forensic models as plain arrays: the MLP (a fitted
    :class:`~dflab.forensic.model.ForensicClassifier`) with each eval-mode BatchNorm folded into the
    Linear before it, and the logistic baseline (a StandardScaler + LogisticRegression
    pipeline); ``thresholds``: {"forensic": mlp, "logreg": baseline}, tuned on val;
    ``crop_size``: features.crop_size the features were computed with."""
    import torch

    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for mod in mlp.model_.net:
        if isinstance(mod, torch.nn.Linear):
            layers.append((mod.weight.detach().double().numpy().copy(),
                           mod.bias.detach().double().numpy().copy()))
        elif isinstance(mod, torch.nn.BatchNorm1d):  # y = (x - mean) / sqrt(var + eps) * g + b
            s = (mod.weight / torch.sqrt(mod.running_var + mod.eps)).detach().double().numpy()
            w, b = layers[-1]
            layers[-1] = (w * s[:, None],
                          (b - mod.running_mean.detach().double().numpy()) * s
                          + mod.bias.detach().double().numpy())
    arrays: dict[str, np.ndarray] = {
        "names": np.array(names), "mean": mlp.scaler_.mean_, "scale": mlp.scaler_.scale_,
        "n_layers": np.array(len(layers)), "threshold": np.array(thresholds["forensic"]),
        "crop_size": np.array(crop_size)}
    for k, (w, b) in enumerate(layers):
        arrays[f"w{k}"], arrays[f"b{k}"] = w, b
    if logreg is not None:
        scaler, lr = logreg[0], logreg[-1]
        arrays.update(lr_mean=scaler.mean_, lr_scale=scaler.scale_, lr_coef=lr.coef_[0],
                      lr_intercept=np.array(lr.intercept_[0]),
                      lr_threshold=np.array(thresholds["logreg"]))
    path = Path(path)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


@dataclass
class ForensicScorer:
    """The forensic models in numpy: ``scores(X)`` -> {"forensic": MLP p(fake), "logreg":
    baseline p(fake)} for ``X (n, d)`` in the order of ``names``."""

    names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    threshold: float
    logreg: dict[str, Any] | None = None
    crop_size: int = 0  # features.crop_size of the training features

    @classmethod
    def load(cls, run: str | Path) -> "ForensicScorer":
        """From a forensic run folder (or its ``forensic_model.npz``)."""
        run = Path(run)
        path = run if run.suffix == ".npz" else run / FORENSIC_FILE
        if not path.is_file():
            raise FileNotFoundError(f"'{run}' is not a forensic run (no {FORENSIC_FILE}); train "
                                    f"one with `dflab train-forensic`")
        redo = "train it again with `dflab train-forensic`"
        with reading(path, "forensic model", redo, also=(zipfile.BadZipFile, OSError)), \
                np.load(path) as z:
            layers = [(z[f"w{k}"], z[f"b{k}"]) for k in range(int(z["n_layers"]))]
            lr = ({"mean": z["lr_mean"], "scale": z["lr_scale"], "coef": z["lr_coef"],
                   "intercept": float(z["lr_intercept"]),
                   "threshold": float(z["lr_threshold"])} if "lr_coef" in z else None)
            return cls([str(n) for n in z["names"]], z["mean"], z["scale"], layers,
                       float(z["threshold"]), lr, int(z["crop_size"]))

    def scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X, float)
        h = (X - self.mean) / self.scale
        for k, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if k < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        out = {"forensic": softmax_fake(h)}
        if self.logreg is not None:
            z = ((X - self.logreg["mean"]) / self.logreg["scale"]) @ self.logreg["coef"]
            out["logreg"] = 1.0 / (1.0 + np.exp(-np.clip(z + self.logreg["intercept"], -60, 60)))
        return out

"""The forensic pipeline: features for every crop, an MLP on them (with a logistic-regression
baseline), evaluated like the visual model, and the explanations (histograms, correlations,
permutation importance, SHAP, per-image explorers, a JPEG robustness table) as plotly figures."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dflab.core.config import FeaturesConfig, LabConfig, config_to_dict
from dflab.core.environment import setup_runtime
from dflab.core.events import Callback, CancelToken, Emitter, EpochMetrics
from dflab.core.files import DamagedFile, load_torch_file, reading
from dflab.core.metrics import evaluate_predictions, protocol_args, tune_threshold
from dflab.core.runs import create_run_dir, write_report
from dflab.data.preprocess import adopt_preprocess_settings
from dflab.forensic.extract import extract_many
from dflab.forensic.features import (as_bgr8, azimuthal_profile, block_dct, feature_names,
                                     log_spectrum, noise_residual, to_gray)
from dflab.forensic.scorer import FORENSIC_FILE, save_forensic

log = logging.getLogger(__name__)

__all__ = ["compute_features", "load_features", "ForensicMLP", "train_forensic",
           "load_forensic", "permutation_importance_table", "shap_values", "plot_histograms",
           "plot_correlation", "plot_importance", "plot_shap_summary", "image_explorer"]


def compute_features(processed: str | Path, cfg: LabConfig | None = None,
                     callbacks: list[Callback] | None = None,
                     cancel: CancelToken | None = None, names: list[str] | None = None) -> Path:
    """Features of every crop in ``processed``: ``<processed>/features.csv`` (index columns +
    one column per feature; ``names``: only those, computing only their families); per-crop
    vectors cached in ``<processed>/features_cache``."""
    from dflab.data.datasets import load_index

    cfg = cfg or LabConfig()
    processed = Path(processed)
    df = load_index(processed)
    em = Emitter("features", callbacks, cancel)
    X = extract_many(df["crop_abspath"].tolist(), processed / "features_cache",
                     cfg.features.crop_size, cfg.features.workers,
                     progress=lambda d, n: em.progress(d, n, "crop"), check=em.check,
                     cluster=cfg.env.cluster, names=names, backend=cfg.features.backend,
                     device=cfg.env.device, batch_size=cfg.features.batch_size)
    names = names or feature_names()
    keep = ["uid", "dataset", "method", "compression", "video_id", "split", "label", "target",
            "frame_index", "crop_path"]
    out = pd.concat([df[keep].reset_index(drop=True), pd.DataFrame(X, columns=names)], axis=1)
    path = processed / "features.csv"
    tmp = path.with_name("features.csv.part")
    out.to_csv(tmp, index=False)
    tmp.replace(path)
    em.result(crops=len(out), features=len(names), path=str(path))
    return path


def load_features(processed: str | Path, names: list[str] | None = None
                  ) -> tuple[pd.DataFrame, list[str]]:
    """(features.csv, the feature columns: ``names``, default every feature)."""
    path = Path(processed) / "features.csv"
    if not path.exists():
        raise FileNotFoundError(f"no features at '{path}'; run `dflab features` first")

    with reading(path, "features table", "delete it and run `dflab features` again (the "
                 "features cache keeps the finished frames)"):
        df = pd.read_csv(path, dtype={"video_id": str, "compression": str, "split": str},
                         keep_default_na=False, encoding="utf-8")
    want = list(names) if names else feature_names()
    missing = [n for n in want if n not in df.columns]
    if missing:
        has = [n for n in feature_names() if n in df.columns]
        why = (f"it holds a subset ({len(has)} of {len(feature_names())} features)" if has
               else "it was made by another feature version")
        raise ValueError(f"'{path}' lacks {len(missing)} of the {len(want)} features wanted "
                         f"(e.g. '{missing[0]}'): {why}; re-run `dflab features` with the "
                         f"features.subset you train with")
    missing = sorted({"uid", "label", "split"} - set(df.columns))
    if missing:
        raise DamagedFile(f"features table '{path}' is damaged (no column {missing[0]}); delete "
                          f"it and run `dflab features` again")
    text = [n for n in want if not pd.api.types.is_numeric_dtype(df[n])]
    if text:
        raise DamagedFile(f"features table '{path}' is damaged (the column '{text[0]}' holds "
                          f"text, not numbers); delete it and run `dflab features` again")
    return df, want


class ForensicMLP(nn.Module):
    """Standardised features (B, d) -> logits (B, 2); Linear/BatchNorm/ReLU/Dropout blocks."""

    def __init__(self, d: int, hidden: list[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        prev = d
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


_FC = FeaturesConfig()  # the estimator's defaults are the config's


class ForensicClassifier:
    """The forensic model as a scikit-learn estimator: standardised features -> MLP.

    ``__init__`` only stores parameters; ``fit(X, y, X_val, y_val)`` trains with early stopping
    on the validation loss and sets ``scaler_``, ``model_``, ``threshold_`` (tuned on val),
    ``history_`` and ``classes_``, and returns ``self``; ``predict_proba`` gives (n, 2).
    """

    def __init__(self, hidden: tuple[int, ...] = tuple(_FC.hidden), dropout: float = _FC.dropout,
                 lr: float = _FC.lr, epochs: int = _FC.epochs, patience: int = _FC.patience,
                 batch_size: int = 64, seed: int = 0):
        self.hidden, self.dropout, self.lr, self.epochs = hidden, dropout, lr, epochs
        self.patience, self.batch_size, self.seed = patience, batch_size, seed

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
            emitter: Emitter | None = None) -> "ForensicClassifier":
        from sklearn.preprocessing import StandardScaler

        em = emitter or Emitter("train-forensic")
        self.scaler_ = StandardScaler().fit(np.asarray(X, float))
        self.classes_ = np.array([0, 1])
        xtr, ytr = self._tensor(X), torch.as_tensor(np.asarray(y).copy(), dtype=torch.long)
        xva, yva = self._tensor(X_val), torch.as_tensor(np.asarray(y_val).copy(),
                                                        dtype=torch.long)
        model = ForensicMLP(xtr.shape[1], list(self.hidden), self.dropout)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs,
                                                           eta_min=self.lr / 100)
        lossf = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(self.seed)
        best, best_state, bad, self.history_ = math.inf, None, 0, []
        for epoch in range(1, self.epochs + 1):
            em.check()
            model.train()
            perm = torch.randperm(len(xtr), generator=g)
            tl = 0.0
            for i in range(0, len(perm), self.batch_size):
                idx = perm[i:i + self.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                opt.zero_grad()
                loss = lossf(model(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                tl += loss.item() * len(idx)
            sched.step()
            model.eval()
            with torch.no_grad():
                vl = lossf(model(xva), yva).item()
            self.history_.append({"epoch": epoch, "train_loss": tl / len(xtr), "val_loss": vl})
            em.emit(EpochMetrics("train-forensic", epoch, self.history_[-1]))
            em.progress(epoch, self.epochs, "epoch")
            if vl < best - 1e-6:
                best, bad = vl, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= self.patience:
                    break
        model.load_state_dict(best_state)
        self.model_ = model.eval()
        self.threshold_ = tune_threshold(y_val, self.fake_prob(X_val))
        return self

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.scaler_.transform(np.asarray(X, float)), dtype=torch.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.model_(self._tensor(X)), 1).numpy()

    def fake_prob(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X)[:, 1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.fake_prob(X) >= self.threshold_).astype(int)

    def save(self, path: Path, names: list[str], config: dict) -> None:
        torch.save({"model": self.model_.state_dict(), "hidden": list(self.hidden),
                    "dropout": self.dropout, "names": names,
                    "scaler_mean": self.scaler_.mean_.tolist(),
                    "scaler_scale": self.scaler_.scale_.tolist(), "threshold": self.threshold_,
                    "config": config}, path)

    @classmethod
    def load(cls, path: Path) -> "ForensicClassifier":
        """The fitted classifier saved by :meth:`save`, its feature names in
        ``feature_names_in_`` (scikit-learn's name) and its threshold in ``threshold_``."""
        redo = "train it again with `dflab train-forensic`"
        ck = load_torch_file(path, "forensic model", redo)
        with reading(path, "forensic model", redo, also=(RuntimeError,)):
            return cls._from_saved(ck)

    @classmethod
    def _from_saved(cls, ck: dict) -> "ForensicClassifier":
        from sklearn.preprocessing import StandardScaler

        names = ck["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"names is {names!r}, not a list of feature names")
        mean = np.asarray(ck["scaler_mean"], dtype=float)
        scale = np.asarray(ck["scaler_scale"], dtype=float)
        if mean.shape != (len(names),) or scale.shape != (len(names),):
            raise ValueError(f"the scaler has {mean.shape} means and {scale.shape} scales for "
                             f"{len(names)} features")
        est = cls(tuple(int(h) for h in ck["hidden"]), float(ck["dropout"]))
        est.model_ = ForensicMLP(len(names), list(est.hidden), est.dropout)
        est.model_.load_state_dict(ck["model"])
        est.model_.eval()
        est.scaler_ = StandardScaler()
        est.scaler_.mean_, est.scaler_.scale_ = mean, scale
        est.scaler_.var_ = scale ** 2
        est.scaler_.n_features_in_ = len(names)
        est.threshold_, est.classes_ = float(ck["threshold"]), np.array([0, 1])
        est.feature_names_in_ = np.array(names, dtype=object)
        return est


def train_forensic(cfg: LabConfig, processed: str | Path, runs_root: str | Path, name: str = "",
                   callbacks: list[Callback] | None = None,
                   cancel: CancelToken | None = None, names: list[str] | None = None) -> Path:
    """MLP and logistic regression on the features of the train split, early stopping on the
    val split, threshold tuned on val, both evaluated on test (frame and video, per method)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dflab.data.datasets import faceless_frames

    cfg = adopt_preprocess_settings(cfg, processed)  # how the crops it scores were made
    fc = cfg.features
    setup_runtime(cfg.env.seed, cfg.env.deterministic, "off", 0)
    em = Emitter("train-forensic", callbacks, cancel)
    df, names = load_features(processed, names)
    parts = {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    for s, p in parts.items():
        if p.empty:
            raise ValueError(f"no feature rows in split '{s}'; the forensic model needs train, "
                             f"val and test videos")
    X = {s: p[names].to_numpy() for s, p in parts.items()}
    y = {s: p["target"].to_numpy() for s, p in parts.items()}
    run = create_run_dir(runs_root, "forensic", cfg, name or time.strftime("%Y%m%d-%H%M%S"),
                         processed=processed)
    mlp = ForensicClassifier(tuple(fc.hidden), fc.dropout, fc.lr, fc.epochs, fc.patience,
                             seed=cfg.env.seed).fit(X["train"], y["train"], X["val"], y["val"],
                                                    em)
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        X["train"], y["train"])
    reports, thresholds = {}, {}
    for label, model in (("mlp", mlp), ("logreg", logreg)):
        thr = thresholds[label] = tune_threshold(y["val"], model.predict_proba(X["val"])[:, 1])
        test = parts["test"].assign(prob=model.predict_proba(X["test"])[:, 1])
        reports[label] = evaluate_predictions(test, thr, seed=cfg.env.seed, **protocol_args(
            cfg.eval, faceless_frames(processed, "test")))
        test[["uid", "method", "video_id", "frame_index", "label", "target", "prob",
              "crop_path"]].to_csv(run / f"predictions_test_{label}.csv", index=False)
    mlp.save(run / "forensic_mlp.pt", names, config_to_dict(cfg))
    # both models as plain arrays: what prediction loads, on any machine, without torch
    save_forensic(run / FORENSIC_FILE, mlp, logreg, names,
                  {"forensic": mlp.threshold_, "logreg": thresholds["logreg"]}, fc.crop_size)
    (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in mlp.history_))
    write_report(run, "test", reports)
    em.result(run=str(run), mlp_video_auc=reports["mlp"]["video"]["auc"],
              logreg_video_auc=reports["logreg"]["video"]["auc"], epochs=len(mlp.history_))
    return run


def load_forensic(run: str | Path) -> ForensicClassifier:
    """The MLP of a forensic run (``forensic_mlp.pt``): its feature names in
    ``feature_names_in_``, its threshold (tuned on val) in ``threshold_``."""
    return ForensicClassifier.load(Path(run) / "forensic_mlp.pt")


def permutation_importance_table(run: str | Path, processed: str | Path, split: str = "test",
                                 repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """scikit-learn permutation importance of the MLP (drop in ROC-AUC), most important first."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score

    model = load_forensic(run)
    names = list(model.feature_names_in_)
    df, _ = load_features(processed, names)
    part = df[df["split"] == split]
    X, y = part[names].to_numpy(), part["target"].to_numpy()
    if len(np.unique(y)) < 2:
        raise ValueError(f"split '{split}' has one class only; permutation importance needs both")
    res = permutation_importance(model, X, y, n_repeats=repeats, random_state=seed,
                                 scoring=lambda est, X_, y_: roc_auc_score(y_, est.fake_prob(X_)))
    return (pd.DataFrame({"feature": names, "importance": res.importances_mean,
                          "std": res.importances_std})
            .sort_values("importance", ascending=False).reset_index(drop=True))


def shap_values(run: str | Path, processed: str | Path, split: str = "test", n: int = 60,
                background: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """SHAP values of the MLP's fake probability (shap's permutation explainer over an
    independent background sample): (values (n, d), features (n, d), names)."""
    import shap

    model = load_forensic(run)
    names = list(model.feature_names_in_)
    df, _ = load_features(processed, names)
    rng = np.random.default_rng(seed)
    tr = df[df["split"] == "train"][names].to_numpy()
    ev = df[df["split"] == split][names].to_numpy()
    bg = tr[rng.choice(len(tr), min(background, len(tr)), replace=False)]
    X = ev[rng.choice(len(ev), min(n, len(ev)), replace=False)]
    explainer = shap.Explainer(model.fake_prob, shap.maskers.Independent(bg), seed=seed)
    sv = explainer(X, max_evals=2 * len(names) + 1, silent=True)
    return np.asarray(sv.values), X, names


# ------------------------------------------------------------------------------ figures
def plot_histograms(processed: str | Path, features: list[str], by_method: bool = False):
    """Per-feature histograms, real vs fake (or per method): one plotly figure, one row each."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df, _ = load_features(processed, features)
    fig = make_subplots(rows=len(features), cols=1, subplot_titles=features)
    groups = df["method"] if by_method else df["label"]
    for r, feat in enumerate(features, start=1):
        for gname in sorted(groups.unique()):
            fig.add_trace(go.Histogram(x=df.loc[groups == gname, feat], name=str(gname),
                                       opacity=0.6, histnorm="probability density",
                                       legendgroup=str(gname), showlegend=r == 1), r, 1)
    fig.update_layout(barmode="overlay", height=260 * len(features), title="Feature histograms")
    return fig


def plot_correlation(processed: str | Path):
    import plotly.graph_objects as go

    with open(Path(processed) / "features.csv") as fh:  # every feature the file holds
        header = fh.readline().strip().split(",")
    df, names = load_features(processed, [n for n in feature_names() if n in header])
    corr = np.nan_to_num(df[names].corr().to_numpy())
    fig = go.Figure(go.Heatmap(z=corr, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu"))
    fig.update_layout(title="Feature correlation", height=800, width=850)
    return fig


def plot_importance(table: pd.DataFrame, top: int = 20):
    import plotly.graph_objects as go

    t = table.head(top).iloc[::-1]
    fig = go.Figure(go.Bar(x=t["importance"], y=t["feature"], orientation="h",
                           error_x={"array": t["std"]}))
    fig.update_layout(title="Permutation importance (drop in ROC-AUC)", height=30 * len(t) + 100)
    return fig


def plot_shap_summary(values: np.ndarray, X: np.ndarray, names: list[str], top: int = 15):
    """A beeswarm-style summary: one row per feature, a dot per sample, colour = feature value."""
    import plotly.graph_objects as go

    order = np.argsort(np.abs(values).mean(0))[::-1][:top][::-1]
    fig = go.Figure()
    rng = np.random.default_rng(0)
    for row, j in enumerate(order):
        v = X[:, j]
        span = np.ptp(v) or 1.0
        fig.add_trace(go.Scatter(
            x=values[:, j], y=row + rng.uniform(-0.25, 0.25, len(v)), mode="markers",
            marker={"color": (v - v.min()) / span, "colorscale": "Bluered", "size": 6,
                    "showscale": row == 0, "colorbar": {"title": "feature value"}},
            name=names[j], showlegend=False))
    fig.update_layout(title="SHAP values (impact on p(fake))", height=30 * len(order) + 120,
                      yaxis={"tickvals": list(range(len(order))),
                             "ticktext": [names[j] for j in order]})
    return fig


def image_explorer(img: np.ndarray, real_profile: np.ndarray | None = None) -> dict[str, Any]:
    """Per-image views as plotly figures: log spectrum, azimuthal profile (against the real-image
    mean when given), DCT mean |coefficient| and energy per block, noise residual and its
    histogram. ``img``: uint8 (H, W, 3) BGR."""
    import plotly.graph_objects as go

    img = as_bgr8(img)
    gray = to_gray(img)
    figs: dict[str, Any] = {}
    figs["spectrum"] = go.Figure(go.Heatmap(z=log_spectrum(gray), colorscale="Viridis"))
    figs["spectrum"].update_layout(title="log |FFT|", yaxis={"scaleanchor": "x"})
    prof = azimuthal_profile(gray)
    f = go.Figure(go.Scatter(y=prof, name="this image"))
    if real_profile is not None:
        f.add_trace(go.Scatter(y=real_profile, name="mean of real images"))
    f.update_layout(title="Azimuthal power profile", xaxis_title="radial frequency bin",
                    yaxis_title="log10 power")
    figs["profile"] = f
    c = block_dct(gray)
    mean_mag = np.log10(np.abs(c).mean(axis=(0, 1)) + 1e-6)
    figs["dct_coefficients"] = go.Figure(go.Heatmap(z=mean_mag, colorscale="Magma"))
    figs["dct_coefficients"].update_layout(title="8x8 DCT: log mean |coefficient| (u, v)",
                                           yaxis={"autorange": "reversed"})
    energy = np.log10((c[..., 1:, :] ** 2).sum(axis=(2, 3)) + (c[..., 0, 1:] ** 2).sum(axis=2)
                      + 1e-6)
    figs["dct_block_energy"] = go.Figure(go.Heatmap(z=energy, colorscale="Magma"))
    figs["dct_block_energy"].update_layout(title="AC energy per 8x8 block (log10)",
                                           yaxis={"autorange": "reversed"})
    res = noise_residual(img).mean(axis=2)
    figs["residual"] = go.Figure(go.Heatmap(z=res, colorscale="Gray", zmid=0))
    figs["residual"].update_layout(title="Noise residual (image - median 3x3)",
                                   yaxis={"autorange": "reversed"})
    figs["residual_hist"] = go.Figure(go.Histogram(x=res.ravel(), nbinsx=80))
    figs["residual_hist"].update_layout(title="Noise residual histogram")
    return figs

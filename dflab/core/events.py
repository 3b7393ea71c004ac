"""Typed progress events for long jobs, delivered to callbacks, plus a cancel token.

The engine never imports a UI: the CLI attaches :class:`TqdmCallback`, the dashboard a widget
callback. Events are frozen dataclasses so a callback cannot change what others receive.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "Event",
    "StageClock",
    "Progress",
    "StepLoss",
    "EpochMetrics",
    "JobResult",
    "JobError",
    "CancelToken",
    "Cancelled",
    "Emitter",
    "TqdmCallback",
    "LogCallback",
    "TensorBoardCallback",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    job: str  # "download", "preprocess", "train", "features", ...


@dataclass(frozen=True)
class Progress(Event):
    done: float  # units finished so far
    total: float  # 0 when unknown
    unit: str = "item"
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        """Units per second since the job started."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


@dataclass(frozen=True)
class StepLoss(Event):
    epoch: int
    step: int  # global optimiser step
    loss: float
    lr: float


@dataclass(frozen=True)
class EpochMetrics(Event):
    epoch: int
    metrics: dict = field(default_factory=dict)  # {"train_loss":..., "val_auc":...}
    roc: dict = field(default_factory=dict)  # {"fpr": [...], "tpr": [...]} on validation


@dataclass(frozen=True)
class JobResult(Event):
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobError(Event):
    message: str
    item: str = ""  # the file or video the error belongs to, when there is one
    fatal: bool = False


class Cancelled(RuntimeError):
    """Raised inside a job when its cancel token was set; finished work is kept."""


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user; finished work is kept and a re-run resumes")


Callback = Callable[[Event], None]


class Emitter:
    """Sends events to callbacks; a failing callback is logged and never stops the job."""

    def __init__(self, job: str, callbacks: Iterable[Callback] | None = None,
                 cancel: CancelToken | None = None):
        self.job = job
        self.callbacks = list(callbacks or [])
        self.cancel = cancel or CancelToken()
        self.t0 = time.monotonic()

    def emit(self, event: Event) -> None:
        for cb in self.callbacks:
            try:
                cb(event)
            except Exception:  # a broken progress bar must not kill a training run
                log.exception("progress callback %r failed", cb)

    def progress(self, done: float, total: float, unit: str = "item", message: str = "") -> None:
        self.emit(Progress(self.job, done, total, unit, message, time.monotonic() - self.t0))

    def error(self, message: str, item: str = "", fatal: bool = False) -> None:
        self.emit(JobError(self.job, message, item, fatal))

    def result(self, **summary: Any) -> None:
        self.emit(JobResult(self.job, summary))

    def check(self) -> None:
        self.cancel.check()


class TqdmCallback:
    """CLI progress: one tqdm bar per job; errors and results go to the log."""

    def __init__(self, **tqdm_kwargs: Any):
        self.kwargs = tqdm_kwargs
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        from tqdm.auto import tqdm

        if isinstance(event, Progress):
            bar = self.bars.get(event.job)
            if bar is None:
                bar = self.bars[event.job] = tqdm(total=event.total or None, desc=event.job,
                                                  unit=event.unit, **self.kwargs)
            if event.total and bar.total != event.total:
                bar.total = event.total
            bar.n = event.done
            if event.message:
                bar.set_postfix_str(event.message[:60], refresh=False)
            bar.refresh()
            if event.total and event.done >= event.total:
                bar.close()
                self.bars.pop(event.job, None)
        elif isinstance(event, EpochMetrics):
            shown = ", ".join(f"{k}={v:.4f}" for k, v in event.metrics.items()
                              if isinstance(v, (int, float)))
            # progress is stderr, like the bars: stdout stays the command's result (--json)
            tqdm.write(f"[{event.job}] epoch {event.epoch}: {shown}", file=sys.stderr)
        elif isinstance(event, JobError):
            tqdm.write(f"[{event.job}] error{' in ' + event.item if event.item else ''}: "
                       f"{event.message}", file=sys.stderr)
        elif isinstance(event, JobResult):
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()


class LogCallback:
    """Writes events to a logger (used by tests and headless runs)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or log
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.logger.debug("%s", event)


class TensorBoardCallback:
    """Writes a training job's events as TensorBoard scalars into ``logdir`` (the run folder, so
    ``tensorboard --logdir <runs>`` shows one curve per run): the loss and learning rate per
    optimiser step, and every numeric epoch metric (losses, val AUC, accuracy...) at the step
    that ended its epoch. ``purge_step``: on a resume, the first step it will write; events a
    killed run wrote from that step on are dropped, so curves never double back."""

    def __init__(self, logdir: str, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        _after_existing_event_files(Path(logdir))
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step or None)

    def __call__(self, event: Event) -> None:
        w = self.writer
        if isinstance(event, StepLoss):
            w.add_scalar("loss/train_step", event.loss, event.step)
            w.add_scalar("lr", event.lr, event.step)
        elif isinstance(event, EpochMetrics):
            m = event.metrics
            step = int(m.get("step", event.epoch))
            for key, value in m.items():
                if key in ("step", "seconds") or isinstance(value, bool) or \
                        not isinstance(value, (int, float)):
                    continue
                tag = {"train_loss": "loss/train", "val_loss": "loss/val"}.get(
                    key, key.replace("val_", "val/", 1) if key.startswith("val_") else key)
                w.add_scalar(tag, value, step)
            w.flush()
        elif isinstance(event, JobResult):
            w.close()

    def close(self) -> None:
        self.writer.close()  # idempotent


def _after_existing_event_files(logdir: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the second
    it was created in, then host, pid and a per-process counter compared as text (``.10`` sorts
    before ``.9``). A resume within the same second as the killed run's file could therefore be
    read first, and its purge would not drop the killed run's extra steps. Waiting for the next
    second (at most one) puts the new file last."""
    newest = 0
    for f in logdir.glob("events.out.tfevents.*"):
        field = f.name.split(".")[3]
        if field.isdigit():
            newest = max(newest, int(field))
    while int(time.time()) <= newest:
        time.sleep(newest + 1 - time.time())


class StageClock:
    """Wall seconds per stage of a workflow, in the order the stages ran (``lap`` after each)."""

    def __init__(self) -> None:
        self.t0 = self.last = time.monotonic()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = round(now - self.last, 1)
        self.last = now

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.t0, 1)

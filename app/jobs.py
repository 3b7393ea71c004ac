"""Run a backend job and show its events in widgets: short calls in a worker thread of the
kernel, long ones (training, preprocessing, features...) as detached ``dflab.core.jobs`` processes that
outlive the page; a panel re-attaches to a running detached job after a reload.

Following ipywidgets' guidance, the worker never uses ``with output:``; it sets widget values and
calls ``Output.append_stdout``, both safe from a thread. Updates are throttled.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

import ipywidgets as W

from dflab.core.events import Cancelled, CancelToken, Event, JobError, JobResult, Progress
from dflab.core.jobs import TERMINAL, Job, JobBusy, start_job

from .widgets import error_html, result_card


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def summary_text(summary: dict) -> str:
    """A job's result summary in words: ``key value`` pairs, numbers to 4 digits, paths by
    their last two parts (the full report is in the run folder)."""
    from pathlib import PurePath

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (str, PurePath)) and "/" in str(v):
            return "/".join(PurePath(v).parts[-2:])
        if isinstance(v, dict):
            return ", ".join(f"{k} {fmt(x)}" for k, x in v.items())
        return str(v)

    return "; ".join(f"{str(k).replace('_', ' ')} {fmt(v)}" for k, v in summary.items())


class JobPanel:
    """A start/cancel pair, a progress bar, a status line and a log, bound to one backend call.

    ``run(fn, **kwargs)`` calls ``fn(callbacks=[...], cancel=token, **kwargs)`` in a thread.
    ``run_detached(lab, **kwargs)`` starts ``lab.<method>(**kwargs)`` as a detached job and
    follows it; ``attach(job)`` follows one started earlier (by another page or kernel).
    ``on_event`` callbacks get every event (e.g. for live plots); ``on_done`` gets the return
    value; ``on_end`` gets the final state (done, failed, cancelled, killed) however it ended;
    ``on_attach`` gets a detached job as the panel starts following it.
    """

    POLL_S = 0.3  # how often a followed job's event log is read

    def __init__(self, title: str, min_interval: float = 0.25, method: str = ""):
        self.title = title
        self.method = method  # the Lab method this panel runs detached ("" = in a thread)
        self.job: Job | None = None
        self.on_end: list[Callable[[str], None]] = []
        self.on_attach: list[Callable[[Job], None]] = []
        self.min_interval = min_interval
        self.start = W.Button(description=title, button_style="primary",
                              layout=W.Layout(width="auto"))
        self.cancel_button = W.Button(description="Cancel", disabled=True)  # grey until a job runs
        self.bar = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="50%"))
        self.status = W.HTML("idle")
        self.log = W.Output(layout=W.Layout(max_height="160px", overflow="auto",
                                            border="1px solid #ddd"))
        self.cancel_button.on_click(lambda _: self.request_cancel())
        self.token = CancelToken()
        self.thread: threading.Thread | None = None
        self.on_event: list[Callable[[Event], None]] = []
        self.on_done: list[Callable[[Any], None]] = []
        self.result: Any = None
        self.error: str = ""
        # where results' paths are shown relative to (the Dashboard gives its data root)
        self.data_root: Callable[[], Any] = lambda: None
        self._last = 0.0
        self.widget = W.VBox([W.HBox([self.start, self.cancel_button, self.bar]), self.status,
                              self.log])

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def request_cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.status.value = f"{self.title}: cancelling (stops at its next check)…"
        else:
            self.token.cancel()

    def _begin(self, what: str) -> None:
        """A new job clears the panel: no old log, bar or error stays."""
        self.log.outputs = ()
        self.bar.value, self.bar.max = 0, 1
        self.start.disabled = True
        self.cancel_button.disabled = False
        self.cancel_button.button_style = "warning"
        self.error = ""
        self.result = None
        self._last = 0.0
        self.status.value = f"⏳ {self.title}: {what}…"

    def _end(self, state: str) -> None:
        self.start.disabled = False
        self.cancel_button.disabled = True
        self.cancel_button.button_style = ""
        for cb in self.on_end:
            cb(state)

    def _callback(self, event: Event) -> None:
        for cb in self.on_event:
            cb(event)
        if isinstance(event, Progress):
            now = time.monotonic()
            finished = bool(event.total) and event.done >= event.total
            if now - self._last < self.min_interval and not finished:
                return
            self._last = now
            self.bar.max = max(event.total, 1)
            self.bar.value = min(event.done, self.bar.max)
            total = f"/{event.total:g}" if event.total else ""
            self.status.value = (f"{event.job}: {event.done:g}{total} {event.unit} "
                                 f"· {event.rate:.2f} {event.unit}/s · ETA "
                                 f"{_fmt_eta(event.eta_s)} · {event.message[:80]}")
        elif isinstance(event, JobError):
            self.log.append_stdout(f"error{' in ' + event.item if event.item else ''}: "
                                   f"{event.message}\n")
        elif isinstance(event, JobResult):
            self.log.append_stdout(f"{event.job} done: {summary_text(event.summary)}\n")

    def run(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        if self.running:
            return
        self.token = CancelToken()
        self.job = None
        self._begin("starting")

        def work() -> None:
            try:
                self.result = fn(callbacks=[self._callback], cancel=self.token, **kwargs)
                self.status.value = result_card(self.title, self.result, self.data_root())
                for cb in self.on_done:
                    cb(self.result)
            except Cancelled as exc:
                self.status.value = f"{self.title}: cancelled"
                self.log.append_stdout(f"{exc}\n")
            except Exception as exc:  # shown to the user with the backend's own message
                self.error = f"{type(exc).__name__}: {exc}"
                trace = traceback.format_exc()
                self.status.value = error_html(f"{self.title} failed: {exc}", trace)
                self.log.append_stderr(trace)
            finally:
                self._end("failed" if self.error else "cancelled" if self.token.cancelled
                          else "done")

        self.thread = threading.Thread(target=work, name=f"dflab-{self.title}", daemon=True)
        self.thread.start()

    # detached jobs -----------------------------------------------------------------------------
    def run_detached(self, lab: Any, name: str = "", **kwargs: Any) -> Job | None:
        """Start ``lab.<self.method>(**kwargs)`` in its own process and follow it here."""
        if self.running:
            return None
        try:
            job = start_job(lab, self.method, name=name, **kwargs)
        except (JobBusy, ValueError, OSError) as exc:
            self.status.value = error_html(f"{self.title}: {exc}")
            return None
        self.attach(job)
        return job

    def attach(self, job: Job) -> None:
        """Follow ``job`` (running or just started) from the start of its own events: progress,
        events, then its end. ``on_attach`` callbacks get the job first (e.g. to show what its
        run folder already holds)."""
        if self.running:
            return
        self.job = job
        self._begin(f"following the job in {job.folder.name}")
        for cb in self.on_attach:
            cb(job)

        def feed(off: int) -> int:
            events, off = job.read_events(off)
            for e in events:
                if isinstance(e, Event):
                    self._callback(e)
            return off

        def follow() -> None:
            off = job.current_offset()
            while True:
                off = feed(off)
                st = job.status()
                if st["state"] in TERMINAL:
                    feed(off)  # what it wrote before its last status
                    break
                time.sleep(self.POLL_S)
            self._finish_detached(job, st)

        self.thread = threading.Thread(target=follow, name=f"dflab-follow-{self.title}",
                                       daemon=True)
        self.thread.start()

    def _finish_detached(self, job: Job, st: dict) -> None:
        state = st["state"]
        try:
            if state == "done":
                self.result = job.result()
                self.bar.value = self.bar.max
                self.status.value = result_card(self.title, self.result, self.data_root())
                for cb in self.on_done:
                    cb(self.result)
            elif state == "cancelled":
                self.status.value = f"{self.title}: cancelled (finished work is kept)"
            else:
                self.error = st.get("message", state)
                tail = job.folder / "job.log"
                log = tail.read_text(errors="replace")[-4000:] if tail.exists() else ""
                self.status.value = error_html(f"{self.title} {state}: {self.error}",
                                               f"{tail}:\n{log}" if log else "")
                if log:
                    self.log.append_stderr(log)
        except Exception as exc:  # a broken result view must not leave the panel "running"
            self.error = f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            self.status.value = error_html(f"{self.title}: {self.error}", trace)
            self.log.append_stderr(trace)
        finally:
            self._end(state)

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

"""Run a backend job in a worker thread and show its events in widgets.

Following ipywidgets' guidance, the worker never uses ``with output:``; it sets widget values and
calls ``Output.append_stdout``, both safe from a thread. Updates are throttled.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

import ipywidgets as W

from dflab.events import Cancelled, CancelToken, Event, JobError, JobResult, Progress

from .widgets import error_html


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


class JobPanel:
    """A start/cancel pair, a progress bar, a status line and a log, bound to one backend call.

    ``run(fn, **kwargs)`` calls ``fn(callbacks=[...], cancel=token, **kwargs)`` in a thread.
    ``on_event`` callbacks get every event (e.g. for live plots); ``on_done`` gets the return value.
    """

    def __init__(self, title: str, min_interval: float = 0.25):
        self.title = title
        self.min_interval = min_interval
        self.start = W.Button(description=title, button_style="primary",
                              layout=W.Layout(width="auto"))
        self.cancel_button = W.Button(description="Cancel", disabled=True,
                                      button_style="warning")
        self.bar = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="50%"))
        self.status = W.HTML("idle")
        self.log = W.Output(layout=W.Layout(max_height="160px", overflow="auto",
                                            border="1px solid #ddd"))
        self.cancel_button.on_click(lambda _: self.token.cancel())
        self.token = CancelToken()
        self.thread: threading.Thread | None = None
        self.on_event: list[Callable[[Event], None]] = []
        self.on_done: list[Callable[[Any], None]] = []
        self.result: Any = None
        self.error: str = ""
        self._last = 0.0
        self.widget = W.VBox([W.HBox([self.start, self.cancel_button, self.bar]), self.status,
                              self.log])

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

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
            self.log.append_stdout(f"{event.job} done: {event.summary}\n")

    def run(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        if self.running:
            return
        self.token = CancelToken()
        self.start.disabled = True
        self.cancel_button.disabled = False
        self.error = ""
        self.status.value = f"{self.title}: starting…"

        def work() -> None:
            try:
                self.result = fn(callbacks=[self._callback], cancel=self.token, **kwargs)
                self.status.value = f"{self.title}: done"
                for cb in self.on_done:
                    cb(self.result)
            except Cancelled as exc:
                self.status.value = f"{self.title}: cancelled"
                self.log.append_stdout(f"{exc}\n")
            except Exception as exc:  # shown to the user with the backend's own message
                self.error = f"{type(exc).__name__}: {exc}"
                self.status.value = error_html(f"{self.title} failed: {exc}")
                self.log.append_stderr(traceback.format_exc())
            finally:
                self.start.disabled = False
                self.cancel_button.disabled = True

        self.thread = threading.Thread(target=work, name=f"dflab-{self.title}", daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

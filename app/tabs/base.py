"""What every dashboard tab is: a title, a widget, the steps of the start-here strip it
completes, its job panels, and a view that follows the session's changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ipywidgets as W

from ..jobs import JobPanel
from ..session import Session


@dataclass(frozen=True)
class Step:
    """A step of the start-here strip: its name, and whether the selection has it done."""

    name: str
    done: Callable[[Session], bool]


class Tab:
    """A dashboard tab. A subclass sets ``title`` and ``steps``, builds ``widget`` and
    ``job_panels`` in ``__init__(session)``, and redraws in :meth:`on_change`."""

    title: str = ""
    steps: tuple[Step, ...] = ()

    def __init__(self, session: Session):
        self.session = session
        self.widget: W.Widget = W.VBox([])
        self.job_panels: list[JobPanel] = []

    def on_change(self, what: set[str]) -> None:
        """The session changed (:data:`app.session.CHANGES`): redraw what depends on it."""

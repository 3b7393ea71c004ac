"""The dflab dashboard (ipywidgets). Imports ``dflab``; nothing in ``dflab`` imports it.

Needs the ``lab`` extra (``pip install 'dflab[lab]'``): ipywidgets, plotly, Voila."""

from dflab.core.registry import require

require("ipywidgets", extra="lab")
require("plotly", extra="lab")

from .dashboard import Dashboard, show  # noqa: E402

__all__ = ["Dashboard", "show"]

"""The dflab dashboard (ipywidgets). Imports ``dflab``; nothing in ``dflab`` imports it."""

from .dashboard import Dashboard, show

__all__ = ["Dashboard", "show"]

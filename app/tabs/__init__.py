"""The dashboard's tabs, one file each, in the order the lab's stages run. A new tab is a
:class:`~app.tabs.base.Tab` subclass in a file of its own and one line in :data:`TABS`: the
start-here strip takes its steps and the job list its panels from the tab itself."""

from .audio_visual import AudioVisualTab
from .base import Step, Tab
from .data import DataTab
from .environment import EnvironmentTab
from .export import ExportTab
from .forensics import ForensicsTab
from .inspect import InspectTab
from .runs import RunsTab
from .train import TrainTab

#: the tabs, left to right
TABS: list[type[Tab]] = [EnvironmentTab, DataTab, TrainTab, ForensicsTab, AudioVisualTab,
                         InspectTab, ExportTab, RunsTab]

__all__ = ["TABS", "Tab", "Step"]

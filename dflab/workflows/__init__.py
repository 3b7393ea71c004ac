"""Whole pipelines run end to end through a Lab: the demo set (``dflab demo``) and the real shared
clips (``dflab demo --real``).

Modules, in the order data flows through them: ``demo``, ``real``."""

"""Data: from labelled videos on disk (or downloaded) to face crops with per-frame JSON, landmarks,
audio features and sync windows, and the index and datasets the models read.

Modules, in the order data flows through them: ``sources``, ``acquire``, ``synthetic``, ``video``,
``audio``, ``faces``, ``landmarks``, ``preprocess``, ``sync_windows``, ``stats``, ``datasets``,
``cluster``."""

"""Audio-visual: lip-sync detection over the sync windows (a SyncNet-style model and a training-free
baseline).

Modules, in the order data flows through them: ``sync``."""

"""Serving a trained detector: the fused verdict, a run as a portable bundle, ONNX export, batch
prediction.

Modules, in the order data flows through them: ``fuse``, ``bundle``, ``export``, ``predict``."""

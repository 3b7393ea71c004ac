"""The visual detector: a timm backbone trained on face crops (with self-blended pseudo-fakes),
evaluated frame- and video-level, and training-free clip cues.

Modules, in the order data flows through them: ``models``, ``pseudo_fakes``, ``train``,
``evaluate``, ``clip_cues``."""

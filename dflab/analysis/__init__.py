"""Analysis of trained detectors: Grad-CAM, robustness to perturbations, generalisation protocols.

Modules, in the order data flows through them: ``explain``, ``robustness``, ``protocol``."""

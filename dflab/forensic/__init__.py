"""The forensic detector: FFT, DCT and noise-residual features of each crop, an MLP on them (and a
logistic baseline), its numpy form for inference, and the feature-set refinement.

Modules, in the order data flows through them: ``features``, ``features_torch``, ``extract``,
``scorer``, ``model``, ``refine``."""

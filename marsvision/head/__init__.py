"""The linear head over frozen features, fitted with scikit-learn (no torch): the probe's classifier
(``fit``), and the calibration and novelty data a model file carries (``trust``). Used by the probe,
by export, and by refits from stored feature vectors."""

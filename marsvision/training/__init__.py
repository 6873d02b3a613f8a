"""Training (needs the ``[train]`` extra): fine-tuning (``train``), the frozen-feature probe
(``probe``), with their shared loop helpers (``engine``) and augmentation (``augment``)."""

"""Learning from curators: which images to ask about (``strategies``), the queue of them over the archive
(``queue``), and a new model version from their labels (``refit``)."""

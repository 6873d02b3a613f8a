"""Learning from curators: which archive images to ask about (``review``), and how to weigh their labels."""

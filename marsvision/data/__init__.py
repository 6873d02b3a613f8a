"""The MSL labelled data set: a copy on disk (``msl``), and its download and verification (``download``)."""

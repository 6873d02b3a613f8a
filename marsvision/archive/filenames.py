"""The MSL file-name fields, for the archive: the parser lives in ``marsvision.msl_names`` (core, so that
``marsvision.cameras`` may use it)."""

from ..msl_names import INSTRUMENTS, PATTERN, parse_filename

__all__ = ["INSTRUMENTS", "PATTERN", "parse_filename"]

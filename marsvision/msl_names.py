"""The fields of an MSL Mastcam / MAHLI / MARDI file name (the MMM product naming convention).

    0830MR0036510000500684E01_DRCL.JPG
    ssssIIqqqqqqcccnnkkkkktgv_pppp.ext

| positions | field | here |
|---|---|---|
| 1–4 | sol: Mars day of the mission | 0830 |
| 5–6 | instrument: MH MAHLI, ML Mastcam Left, MR Mastcam Right, MD MARDI | MR |
| 7–12 | sequence ID | 003651 |
| 13–15 | command number within the sequence | 000 |
| 16–17 | camera data product ID (CDPID) counter | 05 |
| 18–22 | CDPID, the camera's handle of the product | 00684 |
| 23 | product type (A raster 16 bit, B raster 8 bit, C lossless 8 bit, D JPEG grey, …) | E |
| 24 | group-of-pictures counter | 0 |
| 25 | version | 1 |
| 27–30 | processing code, after "_" | DRCL |

Names that do not follow it (other cameras, other missions, renamed files) give no fields; the
archive stores the image all the same.
"""

from __future__ import annotations

import re
from pathlib import PurePath

INSTRUMENTS = {"MH": "MAHLI", "ML": "Mastcam Left", "MR": "Mastcam Right", "MD": "MARDI"}
PATTERN = re.compile(
    r"^(?P<sol>\d{4})(?P<instrument>MH|ML|MR|MD)(?P<sequence>\d{6})(?P<command>\d{3})"
    r"(?P<cdpid_counter>\d{2})(?P<cdpid>\d{5})(?P<product_type>[A-Z])(?P<gop>[0-9A-Z])"
    r"(?P<version>[0-9A-Z])(?:_(?P<processing>[A-Z0-9]{4}))?$",
    re.IGNORECASE,
)


def parse_filename(path: str | PurePath) -> dict:
    """The MMM fields of a file name (see the module docstring), or {} when it does not follow it."""
    m = PATTERN.match(PurePath(path).stem)
    if not m:
        return {}
    f = {
        k: v.upper() if isinstance(v, str) and k in ("instrument", "product_type", "processing") else v
        for k, v in m.groupdict().items()
    }
    f["sol"] = int(f["sol"])
    f["instrument_name"] = INSTRUMENTS[f["instrument"]]
    return f

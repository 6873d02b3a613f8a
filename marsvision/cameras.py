"""Which camera took an image, and whether the model was trained on that camera.

The model was trained on Mastcam (left and right) and MAHLI images only. Other cameras (Navcam,
Hazcam, ChemCam's RMI, MARDI, any other mission's) see differently: wider fields, no colour, other
optics. Their images are still labelled, but marked ``off_camera`` so that a "confident" view can leave
them out: the calibration was measured on training cameras only.

The camera comes from a PDS label's ``INSTRUMENT_ID`` (PDS3) or instrument name (PDS4), or from an MSL
file name: the MMM names (``msl_names``: ``0830MR…``) and the engineering cameras' raw names
(``NLB_…`` Navcam left on the B computer, ``FRA_…`` front Hazcam right, ``RLB_…`` rear Hazcam left,
``CR0_…`` ChemCam RMI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from .msl_names import parse_filename


@dataclass(frozen=True)
class Camera:
    code: str  # what the archive's ``instrument`` column holds (the MMM codes are the file names')
    name: str
    trained: bool  # the model's training images came from this camera


CAMERAS = {
    c.code: c
    for c in (
        Camera("ML", "Mastcam Left", True),
        Camera("MR", "Mastcam Right", True),
        Camera("MH", "MAHLI", True),
        Camera("MD", "MARDI", False),
        Camera("NL", "Navcam Left", False),
        Camera("NR", "Navcam Right", False),
        Camera("FL", "Front Hazcam Left", False),
        Camera("FR", "Front Hazcam Right", False),
        Camera("RL", "Rear Hazcam Left", False),
        Camera("RR", "Rear Hazcam Right", False),
        Camera("CR", "ChemCam RMI", False),
    )
}
TRAINING_CAMERAS = frozenset(c.code for c in CAMERAS.values() if c.trained)

# Instrument identifiers and names as labels write them (upper case, spaces and hyphens as "_") → code.
_ALIASES = {
    "MAST_LEFT": "ML",
    "MASTCAM_LEFT": "ML",
    "MAST_CAMERA_LEFT": "ML",
    "MAST_RIGHT": "MR",
    "MASTCAM_RIGHT": "MR",
    "MAST_CAMERA_RIGHT": "MR",
    "MAHLI": "MH",
    "MARS_HAND_LENS_IMAGER": "MH",
    "MARDI": "MD",
    "MARS_DESCENT_IMAGER": "MD",
    "CHEMCAM_RMI": "CR",
    "CHEMCAM_REMOTE_MICRO_IMAGER": "CR",
}
# MSL engineering cameras: NAV_LEFT_A, FHAZ_RIGHT_B, RHAZ_LEFT_A, … (A/B: the rover computer).
_ECAM_ID = re.compile(r"^(?P<kind>NAV|FHAZ|RHAZ)_(?P<side>LEFT|RIGHT)(?:_[AB])?$")
_ECAM_KIND = {"NAV": "N", "FHAZ": "F", "RHAZ": "R"}
# Raw file names of the engineering cameras and the RMI: NLB_, FRA_, RRB_, CR0_.
_ECAM_NAME = re.compile(r"^(?:(?P<kind>[NFR])(?P<side>[LR])[AB]|(?P<rmi>CR0))_", re.IGNORECASE)


def _normalise(instrument: str) -> str:
    return re.sub(r"[\s\-]+", "_", instrument.strip().upper())


def camera(instrument: str | None) -> Camera | None:
    """The ``Camera`` of an archive code (``MR``), a PDS3 ``INSTRUMENT_ID`` (``MAST_RIGHT``) or a PDS4
    instrument name (``Mast Camera Right``); None when unknown or not an MSL camera."""
    if not instrument:
        return None
    key = _normalise(instrument)
    if key in CAMERAS:
        return CAMERAS[key]
    if key in _ALIASES:
        return CAMERAS[_ALIASES[key]]
    m = _ECAM_ID.match(key)
    if m:
        return CAMERAS[_ECAM_KIND[m["kind"]] + m["side"][0]]
    if key.startswith("CHEMCAM"):
        return CAMERAS["CR"]
    return None


def instrument_code(instrument: str | None) -> str | None:
    """What the archive's ``instrument`` column holds: the camera's code, else the label's identifier
    as written (upper case, at most 32 characters), else None."""
    if not instrument:
        return None
    cam = camera(instrument)
    return cam.code if cam else _normalise(instrument)[:32]


def from_filename(path: str | PurePath) -> str | None:
    """The camera code an MSL file name gives (MMM or engineering-camera naming), or None."""
    mmm = parse_filename(path).get("instrument")
    if mmm:
        return mmm
    m = _ECAM_NAME.match(PurePath(path).name)
    if not m:
        return None
    return "CR" if m["rmi"] else m["kind"].upper() + m["side"].upper()


def outside_training_cameras(instrument: str | None) -> bool:
    """True when ``instrument`` (a code, an ``INSTRUMENT_ID`` or a PDS4 name) is known and is not one of
    the training cameras (Mastcam left/right, MAHLI); False for those and for an unknown (None) one."""
    if not instrument:
        return False
    cam = camera(instrument)
    return cam is None or not cam.trained


def off_camera(instrument: str | None) -> bool | None:
    """The ``off_camera`` flag of an image: None when the camera is unknown, else
    ``outside_training_cameras``."""
    return None if not instrument else outside_training_cameras(instrument)

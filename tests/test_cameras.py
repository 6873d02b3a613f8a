"""Which camera took an image, from a label's instrument or an MSL file name, and whether the model was
trained on it."""

import pytest

from marsvision import cameras


@pytest.mark.parametrize(
    "instrument, code, outside",
    [
        ("MAST_LEFT", "ML", False),
        ("MAST_RIGHT", "MR", False),
        ("MAHLI", "MH", False),
        ("Mast Camera Right", "MR", False),  # a PDS4 instrument name
        ("Mars Hand Lens Imager", "MH", False),
        ("mr", "MR", False),  # the archive's own code
        ("MARDI", "MD", True),
        ("NAV_LEFT_B", "NL", True),
        ("NAV_RIGHT_A", "NR", True),
        ("FHAZ_LEFT_A", "FL", True),
        ("RHAZ_RIGHT_B", "RR", True),
        ("CHEMCAM_RMI", "CR", True),
        ("MCZ_LEFT", "MCZ_LEFT", True),  # another mission's camera: kept as written, outside training
    ],
)
def test_label_instruments(instrument, code, outside):
    assert cameras.instrument_code(instrument) == code
    assert cameras.outside_training_cameras(instrument) is outside
    assert cameras.off_camera(instrument) is outside


def test_unknown_camera_is_not_flagged():
    assert cameras.camera(None) is None and cameras.instrument_code(None) is None
    assert cameras.outside_training_cameras(None) is False and cameras.off_camera(None) is None
    assert cameras.off_camera("") is None


@pytest.mark.parametrize(
    "name, code",
    [
        ("0830MR0036510000500684E01_DRCL.JPG", "MR"),
        ("0585MH0002970020202762I01_DRCL.JPG", "MH"),
        ("0044MD0000450000100011E01_DRCL.JPG", "MD"),
        ("NLB_459577234EDR_F0481570NCAM00353M1.JPG", "NL"),
        ("FRA_397502305EDR_D0010000AUT_04096M1.JPG", "FR"),
        ("RLB_486265291EDR_F0481570RHAZ00323M1.JPG", "RL"),
        ("CR0_398380645EDR_F0030004CCAM01014M1.JPG", "CR"),
        ("holiday.jpg", None),
        ("NLX_459577234EDR.JPG", None),
    ],
)
def test_file_names(name, code):
    assert cameras.from_filename(f"/some/folder/{name}") == code


def test_training_cameras_are_mastcam_and_mahli():
    assert {"ML", "MR", "MH"} == cameras.TRAINING_CAMERAS
    assert all(c.code == code for code, c in cameras.CAMERAS.items())

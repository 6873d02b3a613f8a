from marsvision.archive.filenames import parse_filename


def test_msl_file_name_fields():
    f = parse_filename("calibrated/0830MR0036510000500684E01_DRCL.JPG")
    assert f == {
        "sol": 830,
        "instrument": "MR",
        "sequence": "003651",
        "command": "000",
        "cdpid_counter": "05",
        "cdpid": "00684",
        "product_type": "E",
        "gop": "0",
        "version": "1",
        "processing": "DRCL",
        "instrument_name": "Mastcam Right",
    }
    assert parse_filename("0019MH0000450000100073c00.jpg")["product_type"] == "C"  # lower case tolerated
    assert parse_filename("0830MR0036510000500684E01.png")["processing"] is None  # no processing code


def test_other_names_give_no_fields():
    for name in ("holiday.jpg", "0830XX0036510000500684E01_DRCL.JPG", "830MR0036510000500684E01_DRCL.JPG", ""):
        assert parse_filename(name) == {}

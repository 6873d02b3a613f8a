"""Real PDS products for tests and benchmarks, built from the two real MSL Mastcam labels in
tests/assets/pds (PROVENANCE.md there) and pixels of a test image:

- ``detached``: a copy of the label (``X.LBL``) beside ``X.IMG`` (band-sequential bytes);
- ``attached``: one ``X.IMG`` whose first records hold the label, ``^IMAGE`` pointing to the record after it;
- ``pds4``: ``X.xml`` (a minimal PDS4 label for an ``Array_3D_Image``, written here) beside ``X.img``.

The size fields of the label's IMAGE object (and FILE_RECORDS / RECORD_BYTES) are rewritten to the
pixels' size, so tests may use small images.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

LABELS = Path(__file__).resolve().parent / "assets" / "pds"
MASTCAM_RIGHT = LABELS / "1664MR0086340000802438C00_DRCL_pds3.lbl"  # MAST_RIGHT, sol 1664, 1180 x 1323 x 3
MASTCAM_LEFT = LABELS / "2264ML0121141200805116C00_DRCL_pds3.lbl"  # MAST_LEFT, sol 2264, 1193 x 1338 x 3


def label_size(label: Path = MASTCAM_RIGHT) -> tuple[int, int]:
    """(lines, samples) of the label's IMAGE object."""
    block = _image_block(label.read_text())
    return int(re.search(r"\bLINES\s*=\s*(\d+)", block)[1]), int(re.search(r"LINE_SAMPLES\s*=\s*(\d+)", block)[1])


def _image_block(text: str) -> str:
    return re.search(r"OBJECT\s*=\s*IMAGE\b.*?END_OBJECT\s*=\s*IMAGE", text, re.S)[0]


def band_sequential(pixels: np.ndarray) -> bytes:
    """(lines, samples, 3) or (lines, samples) uint8 → the bytes of a band-sequential image."""
    return np.ascontiguousarray(np.moveaxis(pixels, -1, 0) if pixels.ndim == 3 else pixels).tobytes()


def pds3_label(pixels: np.ndarray, label: Path = MASTCAM_RIGHT, record_bytes: int | None = None, **replace) -> str:
    """The label's text for ``pixels``: the IMAGE object's size and bands, FILE_RECORDS and RECORD_BYTES
    (one record a line of one band unless ``record_bytes``); ``replace``: other keywords' new values."""
    text = label.read_text()
    lines, samples = pixels.shape[:2]
    bands = pixels.shape[2] if pixels.ndim == 3 else 1
    block = _image_block(text)
    new = re.sub(r"(\n\s*)LINES(\s*)=\s*\d+", rf"\g<1>LINES\g<2>= {lines}", block)
    new = re.sub(r"LINE_SAMPLES(\s*)=\s*\d+", rf"LINE_SAMPLES\g<1>= {samples}", new)
    new = re.sub(r"\bBANDS(\s*)=\s*\d+", rf"BANDS\g<1>= {bands}", new)
    text = text.replace(block, new)
    rb = record_bytes or samples
    text = re.sub(r"RECORD_BYTES(\s*)=\s*\d+", rf"RECORD_BYTES\g<1>= {rb}", text, count=1)
    text = re.sub(r"FILE_RECORDS(\s*)=\s*\d+", rf"FILE_RECORDS\g<1>= {math.ceil(pixels.size / rb)}", text, count=1)
    for key, value in replace.items():
        text = re.sub(rf"\n{key}(\s*)=\s*[^\n]+", rf"\n{key}\g<1>= {value}", text, count=1)
    return text


def product_id(label: Path) -> str:
    return re.search(r'\^IMAGE\s*=\s*\("(.+?)\.IMG"\)', label.read_text())[1]


def detached(folder: Path, pixels: np.ndarray, label: Path = MASTCAM_RIGHT, **replace) -> Path:
    """A detached PDS3 product in ``folder``; returns the label (``X.LBL``; the data is ``X.IMG``)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = product_id(label)
    (folder / f"{name}.IMG").write_bytes(band_sequential(pixels))
    out = folder / f"{name}.LBL"
    out.write_text(pds3_label(pixels, label, **replace))
    return out


def attached(folder: Path, pixels: np.ndarray, label: Path = MASTCAM_RIGHT, **replace) -> Path:
    """An attached-label PDS3 product ``X.IMG``: the label padded to whole records, then the image."""
    folder.mkdir(parents=True, exist_ok=True)
    rb = 1323  # the sample's record length: the image starts on a record boundary, whatever its width
    data = band_sequential(pixels)
    image_records = math.ceil(len(data) / rb)
    text = pds3_label(pixels, label, record_bytes=rb, **replace).replace("\n", "\r\n")  # PDS3's line ends
    label_records = math.ceil((len(text) + 80) / rb)
    for _ in range(3):  # the pointer's digits may add a record
        body = re.sub(r'\^IMAGE\s*=\s*\(".+?"\)', f"^IMAGE = {label_records + 1}", text)
        body = re.sub(
            r"FILE_RECORDS(\s*)=\s*\d+",
            rf"FILE_RECORDS\g<1>= {label_records + image_records}\r\nLABEL_RECORDS\g<1>= {label_records}",
            body,
            count=1,
        )
        label_records = max(label_records, math.ceil(len(body.encode()) / rb))
    out = folder / f"{product_id(label)}.IMG"
    out.write_bytes(body.encode().ljust(label_records * rb, b" ") + data.ljust(image_records * rb, b"\0"))
    return out


PDS4_LABEL = """<?xml version="1.0" encoding="UTF-8"?>
<Product_Observational xmlns="http://pds.nasa.gov/pds4/pds/v1" xmlns:msn="http://pds.nasa.gov/pds4/msn/v1"
    xmlns:img="http://pds.nasa.gov/pds4/img/v1" xmlns:geom="http://pds.nasa.gov/pds4/geom/v1">
  <Identification_Area>
    <logical_identifier>urn:nasa:pds:msl_mastcam:data:{lid}</logical_identifier>
    <version_id>1.0</version_id>
    <title>Mastcam right image, sol 1664</title>
    <information_model_version>1.15.0.0</information_model_version>
    <product_class>Product_Observational</product_class>
  </Identification_Area>
  <Observation_Area>
    <Time_Coordinates>
      <start_date_time>2017-04-11T20:23:54.397Z</start_date_time>
      <stop_date_time>2017-04-11T20:23:54.552Z</stop_date_time>
    </Time_Coordinates>
    <Investigation_Area>
      <name>Mars Science Laboratory</name>
      <type>Mission</type>
    </Investigation_Area>
    <Observing_System>
      <Observing_System_Component>
        <name>Mars Science Laboratory</name>
        <type>Spacecraft</type>
      </Observing_System_Component>
      <Observing_System_Component>
        <name>Mast Camera Right</name>
        <type>Instrument</type>
      </Observing_System_Component>
    </Observing_System>
    <Target_Identification>
      <name>Mars</name>
      <type>Planet</type>
    </Target_Identification>
    <Mission_Area>
      <msn:Mission_Information>
        <msn:sol_number>1664</msn:sol_number>
        <msn:start_local_mean_solar_time>Sol-01664M12:20:10.483</msn:start_local_mean_solar_time>
        <msn:sequence_id>mcam09502</msn:sequence_id>
      </msn:Mission_Information>
    </Mission_Area>
    <Discipline_Area>
      <img:Imaging>
        <img:Optical_Filter>
          <img:filter_name>MASTCAM_R0_CLEAR</img:filter_name>
        </img:Optical_Filter>
      </img:Imaging>
      <geom:Geometry>
        <geom:Motion_Counter>
          <geom:Motion_Counter_Index>
            <geom:index_id>SITE</geom:index_id>
            <geom:index_value_number>62</geom:index_value_number>
          </geom:Motion_Counter_Index>
          <geom:Motion_Counter_Index>
            <geom:index_id>DRIVE</geom:index_id>
            <geom:index_value_number>660</geom:index_value_number>
          </geom:Motion_Counter_Index>
        </geom:Motion_Counter>
      </geom:Geometry>
    </Discipline_Area>
  </Observation_Area>
  <File_Area_Observational>
    <File>
      <file_name>{data}</file_name>{file_size}
    </File>
    <Array_3D_Image>
      <offset unit="byte">0</offset>
      <axes>3</axes>
      <axis_index_order>Last Index Fastest</axis_index_order>
      <Element_Array>
        <data_type>{data_type}</data_type>
      </Element_Array>
      <Axis_Array>
        <axis_name>Band</axis_name>
        <elements>{bands}</elements>
        <sequence_number>1</sequence_number>
      </Axis_Array>
      <Axis_Array>
        <axis_name>Line</axis_name>
        <elements>{lines}</elements>
        <sequence_number>2</sequence_number>
      </Axis_Array>
      <Axis_Array>
        <axis_name>Sample</axis_name>
        <elements>{samples}</elements>
        <sequence_number>3</sequence_number>
      </Axis_Array>
    </Array_3D_Image>
  </File_Area_Observational>
</Product_Observational>
"""


PDS4_NAME = "1664mr0086340000802438c00_drcl"


def pds4(folder: Path, pixels: np.ndarray, name: str = PDS4_NAME, file_size: bool = True) -> Path:
    """A PDS4 product: ``name.xml`` beside ``name.img`` (band sequential; 8-bit, or 16-bit big-endian for
    uint16 pixels); the label gives the file's size when ``file_size``."""
    folder.mkdir(parents=True, exist_ok=True)
    cube = pixels if pixels.ndim == 3 else pixels[..., None]
    data = np.ascontiguousarray(np.moveaxis(cube, -1, 0)).astype(">u2" if pixels.dtype == np.uint16 else "u1").tobytes()
    (folder / f"{name}.img").write_bytes(data)
    size = f'\n      <file_size unit="byte">{len(data)}</file_size>' if file_size else ""
    out = folder / f"{name}.xml"
    out.write_text(
        PDS4_LABEL.format(
            lid=name,
            data=f"{name}.img",
            file_size=size,
            data_type="UnsignedMSB2" if pixels.dtype == np.uint16 else "UnsignedByte",
            bands=cube.shape[2],
            lines=cube.shape[0],
            samples=cube.shape[1],
        )
    )
    return out

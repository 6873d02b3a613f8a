"""PDS products as model inputs: the image and the label fields people search by, read through pdr.

pdr (the Planetary Data Reader, ``pip install 'marsvision[pds]'``) parses the labels and reads the data;
this module only chooses the image object, turns it into what the model takes, checks that the data
file is whole, and picks the fields. Three layouts are read:

- PDS3 with a detached label: ``X.LBL`` beside ``X.IMG`` (the label's ``^IMAGE`` names the data file);
- PDS3 with an attached label: the label at the head of ``X.IMG`` (``^IMAGE`` is a record number);
- PDS4: ``X.xml`` beside its data file (``<File><file_name>``).

Either file of a product may be given; a folder search takes each product once (``product_files``).

The image: 3 bands become RGB; more than 3 bands, their first 3 as RGB (multispectral stacks have no
true colour; the first 3 is a documented, arbitrary choice); 1 or 2 bands, the first band as grey (the
model then sees it as R = G = B, as it sees a grey JPEG). Data wider than 8 bits are scaled by their
range into 0–255, as ``preprocess`` scales 16-bit PNGs.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError, require
from .errors import ImageErrorKind as Kind

LABEL_SUFFIXES = (".lbl", ".xml")
DATA_SUFFIXES = (".img", ".dat")
PDS_SUFFIXES = frozenset(LABEL_SUFFIXES + DATA_SUFFIXES)
FIELDS = (
    "product_id",
    "instrument",
    "sol",
    "start_time",
    "local_mean_solar_time",
    "sequence_id",
    "filter",
    "target",
    "lines",
    "samples",
    "bands",
    "site",
    "drive",
)
_HEAD_BYTES = 4096
_PDS3_HEAD = re.compile(rb"^\s*(PDS_VERSION_ID|ODL_VERSION_ID)\s*=")
_PDS4_HEAD = re.compile(rb"<Product_\w+|pds\.nasa\.gov/pds4")
# pdr's label parser calls ast.literal_eval, whose recursion counter CPython 3.11 keeps per interpreter, not
# per thread: once in 32 products, `index` (two decoding threads) failed with "AST constructor recursion
# depth mismatch". One lock around pdr: its parse is pure Python, so the GIL serialised it anyway.
_PDR_LOCK = threading.Lock()
# Objects of a PDS3 label that are never the picture.
_NOT_IMAGE = ("LABEL", "HEADER", "HISTOGRAM", "MODEL_DESC", "TABLE", "PREFIX", "SUFFIX")


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except OSError:
        return b""


def is_pds3_label(path: str | Path) -> bool:
    """The file starts with a PDS3 label (a detached ``.LBL``, or an ``.IMG`` with its label attached)."""
    return bool(_PDS3_HEAD.match(_head(Path(path))))


def is_pds4_label(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".xml" and bool(_PDS4_HEAD.search(_head(Path(path))))


def _sibling_label(data: Path) -> Path | None:
    """The detached label of a data file: the same name with a label suffix, in any case."""
    for suffix in (".LBL", ".lbl", ".xml", ".XML"):
        label = data.with_suffix(suffix)
        if label.is_file() and (is_pds3_label(label) or is_pds4_label(label)):
            return label
    return None


def label_of(path: str | Path) -> Path | None:
    """The label to read for ``path`` (a label, an attached-label data file, or a data file with a
    detached label beside it), or None when ``path`` is not part of a PDS product."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PDS_SUFFIXES:
        return None
    if suffix == ".lbl":
        return path if is_pds3_label(path) else None
    if suffix == ".xml":
        return path if is_pds4_label(path) else None
    return _sibling_label(path) or (path if is_pds3_label(path) else None)


def product_files(files: list[Path]) -> list[Path]:
    """Of ``files`` with a PDS suffix, one per product: labels, and data files that carry their label;
    a data file with a detached label beside it is left to its label, and other ``.img``/``.xml`` files
    (not PDS) are left out."""
    out = []
    for f in files:
        label = label_of(f)
        if label is not None and label == f:
            out.append(f)
    return out


def _beside(label: Path, name) -> Path | None:
    """The file ``name`` in the label's folder, its case as archives vary it (``X.IMG`` / ``x.img``)."""
    if not isinstance(name, str) or not name:
        return None
    exact = label.parent / name
    if exact.is_file():
        return exact
    return next((f for f in label.parent.iterdir() if f.name.lower() == name.lower()), None)


def _pointed_name(data, key: str | None, pds4: bool):
    """The data file name a label gives for its image: PDS4 ``<file_name>``, PDS3 ``^IMAGE`` (a name, or
    (name, record); a bare record number means the label is attached: None)."""
    if pds4:
        return _first(data.metaget("file_name"))
    pointer = data.metaget(f"^{key or 'IMAGE'}")
    return pointer[0] if isinstance(pointer, (list, tuple)) and pointer else pointer


def product_files_of(path: str | Path) -> list[Path]:
    """The files that make up the product of ``path``: [detached label, data file], or [path] itself (an
    attached label, a data file, a file that is not a product, a label whose data file is missing, or
    no pdr installed). The archive hashes them together, so new data under an old label is a new image."""
    path = Path(path)
    if path.suffix.lower() not in LABEL_SUFFIXES or label_of(path) != path:
        return [path]
    for suffix in (".IMG", ".img", ".DAT", ".dat"):  # the archives' convention, X.LBL → X.IMG: no parse
        if path.with_suffix(suffix).is_file():
            return [path, path.with_suffix(suffix)]
    try:
        pdr = _pdr()
    except ImportError:
        return [path]
    try:
        with _PDR_LOCK:
            data = pdr.read(str(path))
            name = _pointed_name(data, _image_key(data), path.suffix.lower() == ".xml")
    except Exception:  # noqa: BLE001 - an unreadable label is reported when it is decoded
        return [path]
    data_file = _beside(path, name)
    return [path, data_file] if data_file is not None and data_file != path else [path]


def _first(value):
    """A label value as one plain value: the first of a sequence, None for PDS's null words."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, str) and value.strip().upper() in ("", "NULL", "N/A", "UNK", "NONE"):
        return None
    return value


def _int(value) -> int | None:
    try:
        return None if _first(value) is None else int(_first(value))
    except (TypeError, ValueError):
        return None


def _text(value) -> str | None:
    value = _first(value)
    return None if value is None else str(value).strip()


def _motion_counter(meta, names_key: str, values_key: str) -> dict[str, int]:
    names, values = meta.metaget(names_key), meta.metaget(values_key)
    if not isinstance(names, (list, tuple)) or not isinstance(values, (list, tuple)):
        return {}
    return {str(n).upper(): v for n, v in zip(names, values, strict=False) if isinstance(v, int)}


def _pds3_fields(meta) -> dict:
    get = meta.metaget
    counter = _motion_counter(meta, "ROVER_MOTION_COUNTER_NAME", "ROVER_MOTION_COUNTER")
    return {
        "product_id": _text(get("PRODUCT_ID")),
        "instrument": _text(get("INSTRUMENT_ID")),
        "sol": _int(get("PLANET_DAY_NUMBER")),
        "start_time": _text(get("START_TIME")),
        # MSL labels put it in the mission's namespace.
        "local_mean_solar_time": _text(get("LOCAL_MEAN_SOLAR_TIME") or get("MSL:LOCAL_MEAN_SOLAR_TIME")),
        "sequence_id": _text(get("SEQUENCE_ID")),
        "filter": _text(get("FILTER_NAME")),
        "target": _text(get("TARGET_NAME")),
        "site": counter.get("SITE"),
        "drive": counter.get("DRIVE"),
    }


def _pds4_fields(meta) -> dict:
    def get(key):
        values = _all(meta, key, blocks=False)
        return values[0] if values else None

    lid = _text(get("logical_identifier"))
    instrument = None
    for component in _all(meta, "Observing_System_Component"):
        if str(_local(component, "type")).lower() == "instrument":
            instrument = _text(_local(component, "name"))
            break
    targets = _all(meta, "Target_Identification")
    counter = {}
    for index in _all(meta, "Motion_Counter_Index"):
        name = _local(index, "index_id") or _local(index, "index_name")
        value = _int(_local(index, "index_value_number"))
        if name is not None and value is not None:
            counter[str(name).upper()] = value
    return {
        "product_id": lid.rsplit(":", 1)[-1] if lid else None,
        "instrument": instrument,
        "sol": _int(get("sol_number")),
        "start_time": _text(get("start_date_time")),
        "local_mean_solar_time": _text(get("local_mean_solar_time") or get("start_local_mean_solar_time")),
        "sequence_id": _text(get("sequence_id")),
        "filter": _text(get("filter_name")),
        "target": _text(_local(targets[0], "name")) if targets else None,
        "site": counter.get("SITE"),
        "drive": counter.get("DRIVE"),
    }


def _local(block, key: str, every: bool = False):
    """The value (or, with ``every``, all values) of ``key`` in one PDS4 block, whatever its namespace prefix."""
    values = [v for k, v in block.items() if str(k).split(":")[-1] == key]
    return values if every else (values[0] if values else None)


def _all(meta, key: str, blocks: bool = True) -> list:
    """Every block (or, with ``blocks=False``, value) named ``key`` anywhere in a PDS4 label, whatever its
    namespace prefix (pdr keeps ``msn:sol_number`` as it is written)."""
    found = []

    def walk(node):
        if hasattr(node, "items"):
            for k, v in node.items():
                if str(k).split(":")[-1] == key:
                    found.extend(v if isinstance(v, list) else [v])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(meta)
    return [b for b in found if hasattr(b, "get") == blocks]


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Image data → uint8: 8-bit data as they are, anything else scaled by its range (NaN → 0)."""
    if arr.dtype == np.uint8:
        return arr
    a = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return a.round().astype(np.uint8)


def layout(arr: np.ndarray) -> tuple[int, int, int, bool]:
    """(lines, samples, bands, bands_last) of an image array: 2-D is one band; pdr gives 3-D images as
    (band, line, sample), and a band-last array (line, sample, band) has its fewest on the last axis."""
    if arr.ndim == 2:
        return arr.shape[0], arr.shape[1], 1, False
    if arr.ndim != 3:
        raise ImageError(f"image object has {arr.ndim} dimensions, not 2 or 3", Kind.NOT_AN_IMAGE)
    if arr.shape[2] < arr.shape[0]:
        return arr.shape[0], arr.shape[1], arr.shape[2], True
    return arr.shape[1], arr.shape[2], arr.shape[0], False


def to_picture(arr: np.ndarray) -> Image.Image:
    """A product's image array → a grey (1 or 2 bands: the first) or RGB (3 or more: the first 3) PIL image."""
    arr = np.asarray(arr)
    _, _, bands, bands_last = layout(arr)
    if arr.ndim == 3 and bands_last:
        arr = arr[..., 0] if bands < 3 else arr[..., :3]
    elif arr.ndim == 3:
        planes = _to_uint8(arr[:1] if bands < 3 else arr[:3])  # one range for the three: colour balance kept
        if bands < 3:
            return Image.fromarray(np.ascontiguousarray(planes[0]), "L")
        # PIL interleaves band-sequential planes in C: 2 ms for a Mastcam frame, against 15 ms for numpy.
        return Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(p), "L") for p in planes])
    arr = np.ascontiguousarray(_to_uint8(arr))
    return Image.fromarray(arr, "RGB" if arr.ndim == 3 else "L")


def _image_key(data) -> str:
    keys = [k for k in data.keys() if not any(word in k.upper() for word in _NOT_IMAGE)]  # noqa: SIM118 (pdr's Data)
    if not keys:
        raise ImageError(f"{data.filename}: the label describes no image", Kind.NOT_AN_IMAGE)
    return "IMAGE" if "IMAGE" in keys else keys[0]


def _declared_size(data, pds4: bool) -> tuple[int | None, int | None]:
    """(the data file's size in bytes as the label gives it, the least size its first array needs), each
    None when the label does not say."""
    if not pds4:
        if str(data.metaget("RECORD_TYPE", "")).upper() != "FIXED_LENGTH":
            return None, None
        records, record_bytes = _int(data.metaget("FILE_RECORDS")), _int(data.metaget("RECORD_BYTES"))
        return (records * record_bytes if records and record_bytes else None), None
    meta = data.metadata
    exact = _int(_all(meta, "file_size", blocks=False)[:1] or None)
    arrays = [b for k in ("Array_2D_Image", "Array_3D_Image", "Array_3D_Spectrum", "Array") for b in _all(meta, k)]
    if not arrays:
        return exact, None
    array = arrays[0]
    data_type = str(_local(_local(array, "Element_Array") or {}, "data_type"))
    width = re.search(r"\d+", data_type)  # UnsignedMSB2 → 2; Single, Double and Byte types below
    item = 4 if "Single" in data_type else 8 if "Double" in data_type else int(width[0]) if width else 1
    try:
        count = int(np.prod([int(_local(a, "elements")) for a in _local(array, "Axis_Array", every=True)]))
        return exact, (_int(_local(array, "offset")) or 0) + count * item
    except (TypeError, ValueError, AttributeError):
        return exact, None


def _check_data_file(data, key: str, label: Path, pds4: bool) -> Path:
    """The data file of ``key``: NOT_FOUND when missing, CORRUPT when its size is not the label's."""
    name = _pointed_name(data, key, pds4)
    # pdr keeps no mapping for PDS4 arrays: the label's <file_name>, beside it.
    target = _beside(label, name) if pds4 else data.file_mapping.get(key)
    if target is None:
        raise ImageError(f"{label.name}: data file {name} is missing", Kind.NOT_FOUND)
    target = Path(target)
    (declared, needed), actual = _declared_size(data, pds4), target.stat().st_size
    if declared is not None and actual != declared:
        reason = "truncated" if actual < declared else "wrong size"
        raise ImageError(f"{target.name}: {reason}: {actual:,} bytes, the label says {declared:,}", Kind.CORRUPT)
    if needed is not None and actual < needed:
        raise ImageError(f"{target.name}: truncated: {actual:,} bytes, the image needs {needed:,}", Kind.CORRUPT)
    return target


def _pdr():
    """pdr, with its warnings silenced: it warns where it cannot load an object, and ``read_product`` says
    so as an ``ImageError`` instead (a filter, not ``catch_warnings``, which is not thread-safe)."""
    pdr = require("pdr", "reading PDS products", "pds")
    warnings.filterwarnings("ignore", module=r"pdr(\.|$)")
    return pdr


def read_product(path: str | Path) -> tuple[Image.Image, dict]:
    """A PDS product (its label or its data file) → (grey or RGB PIL image, label fields).

    The fields are ``FIELDS``, None where the label has no value. ``ImageError`` (one line, naming the
    file) when ``path`` is not part of a product (NOT_AN_IMAGE), its data file is missing (NOT_FOUND)
    or truncated, of the wrong size or unreadable (CORRUPT).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError("file not found", Kind.NOT_FOUND)
    label = label_of(path)
    if label is None:
        raise ImageError(f"{path.name}: not a PDS product (no PDS3 or PDS4 label found)", Kind.NOT_AN_IMAGE)
    pdr = _pdr()
    pds4 = label.suffix.lower() == ".xml"
    try:
        with _PDR_LOCK:
            data = pdr.read(str(label))
            key = _image_key(data)
            # PDS4: pdr raises on a short file, so it is checked first; PDS3: pdr finds the file (any case)
            # while loading, and a failed load leaves the label block in place of the array.
            data_file = _check_data_file(data, key, label, pds4) if pds4 else None
            arr = data[key]
            data_file = data_file or _check_data_file(data, key, label, pds4)
            fields = _pds4_fields(data.metadata) if pds4 else _pds3_fields(data.metadata)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - pdr raises many kinds for a bad label
        raise ImageError(f"{label.name}: cannot read the product: {e}", Kind.CORRUPT) from None
    if not isinstance(arr, np.ndarray):
        raise ImageError(f"{data_file.name}: pdr could not read its {key} object", Kind.CORRUPT)
    lines, samples, bands, _ = layout(arr)
    fields.update(lines=int(lines), samples=int(samples), bands=int(bands))
    return to_picture(arr), {k: fields.get(k) for k in FIELDS}

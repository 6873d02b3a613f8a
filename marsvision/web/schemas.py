"""The API's bodies (pydantic): what /docs shows and what each route's answer is checked against."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

INT32_MAX = 2**31 - 1  # ids and sols are INTEGER columns: 32-bit on PostgreSQL


def storable_text(value: str) -> str:
    """Text a database can keep: no NUL (PostgreSQL refuses it in text) and valid UTF-8 (no lone surrogate)."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (a lone surrogate is not)") from None
    return value


StorableText = Annotated[str, AfterValidator(storable_text)]


class LabelIn(BaseModel):
    label: StorableText = Field(min_length=1, max_length=64)
    note: StorableText = Field(default="", max_length=2000)
    author: StorableText = Field(default="", max_length=120)


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    database: str
    model: str
    classes: int
    writes: str


class ImageItem(BaseModel):
    """One image as search, similar and review list it; times are ISO 8601 with their UTC offset."""

    id: int
    path: str
    sha256: str
    sol: int | None = None
    instrument: str | None = None
    label: str | None = None
    confidence: float | None = None
    unknown: bool | None = None
    novelty: float | None = None
    margin: float | None = None
    top_k: list[tuple[str, float]] = []
    reviewed_label: str | None = None
    reviewed_at: str | None = None
    error: str | None = None
    indexed_at: str | None = None
    size_bytes: int | None = None
    model_version: str | None = None
    # True: from a camera outside the training cameras (Mastcam, MAHLI); None: the camera is not known.
    off_camera: bool | None = None
    # A PDS product's label fields (None for plain JPEG/PNG files); start_time in ISO 8601 with its offset.
    product_id: str | None = None
    instrument_id: str | None = None
    start_time: str | None = None
    local_mean_solar_time: str | None = None
    sequence_id: str | None = None
    filter_name: str | None = None
    target: str | None = None
    lines: int | None = None
    samples: int | None = None
    bands: int | None = None
    site: int | None = None
    drive: int | None = None
    name_fields: dict[str, Any] | None = None


class ImagePage(BaseModel):
    """``GET /api/images`` (documented here, sent as raw JSON: see routes/images.py)."""

    total: int
    page: int
    page_size: int
    items: list[ImageItem]


class CorrectionOut(BaseModel):
    label: str
    note: str
    author: str
    model_label: str | None
    created_at: str | None


class ImageDetail(ImageItem):
    corrections: list[CorrectionOut]


class SimilarItem(ImageItem):
    similarity: float


class Similar(BaseModel):
    image: int
    items: list[SimilarItem]


class ClassCount(BaseModel):
    label: str
    count: int
    reviewed: int
    not_reviewed: int
    curated: int
    model: bool  # one of the active model's classes


class Classes(BaseModel):
    classes: list[ClassCount]


class Classified(BaseModel):
    filename: str
    label: str | None
    confidence: float | None
    unknown: bool | None
    novelty: float | None
    top_k: list[tuple[str, float]]
    error: str | None
    model_version: str
    id: int | None = Field(default=None, description="the archive's id, when stored (?store=true)")


class ClassifyResult(BaseModel):
    items: list[Classified]


class ModelVersionOut(BaseModel):
    version: str
    active: bool
    created_at: str
    parent: str | None
    corrections: int
    images: int
    path: str


class Models(BaseModel):
    models: list[ModelVersionOut]


class Activated(BaseModel):
    version: str
    rescored: int
    seconds: float


class ReviewItem(ImageItem):
    review_margin: float


class ReviewQueue(BaseModel):
    strategy: str
    default: str
    strategies: list[str]
    items: list[ReviewItem]


class FacetValue(BaseModel):
    value: str | bool | None
    count: int


class Facets(BaseModel):
    """``GET /api/facets``: each facet's values, most images first, counted under every filter but its own."""

    total: int
    facets: dict[str, list[FacetValue]]


class TimelineSeries(BaseModel):
    key: str | None
    total: int
    counts: list[int]  # per sol, in the order of ``sols``


class Timeline(BaseModel):
    """``GET /api/timeline``: images per sol by class or camera, under the filters but the sol range."""

    by: str
    sols: list[int]
    series: list[TimelineSeries]
    selected: tuple[int | None, int | None]

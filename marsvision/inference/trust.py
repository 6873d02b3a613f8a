"""What a model file says about how far to trust a prediction, applied in numpy (no torch, no scikit-learn).

- ``Head``: the linear classifier over pooled features (logits = F·Wᵀ + b), and the class-activation maps.
- ``Novelty``: how far an image is from the training images, in units of the threshold above which
  the image is flagged ``unknown`` (so ``unknown`` ⇔ novelty > 1); the weighted geometric mean of two
  ``Neighbours`` distances (pooled features, texture).
- ``Calibration``: turns logits (and the novelty) into probabilities that mean what they say.

Each is plain data in the model file (``to_dict``/``from_dict``; arrays as base64 float32), fitted by
``marsvision.head.trust`` on the fitted images, campaign by campaign.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

from ..model_file import ModelFileError


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits → (N, C) class probabilities (max-subtracted, so large logits do not overflow)."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "i1"}


def encode_array(a: np.ndarray, dtype: str = "float32") -> dict:
    """An array as JSON-able data: base64 of its little-endian float32 (or, to halve a large reference
    set, float16) bytes; or int8 with one float32 scale per column (the last axis), a quarter of float32,
    for the novelty's largest arrays (rounding error ≤ 1/254 of each column's largest magnitude)."""
    a = np.asarray(a, np.float32)
    if dtype == "int8":
        scale = np.maximum(np.abs(a.reshape(-1, a.shape[-1])).max(0), 1e-12) / 127 if a.size else np.ones(0)
        q = np.round(a / scale).astype(np.int8) if a.size else a.astype(np.int8)
        return {**_raw(q, "int8"), "scale": encode_array(scale)}
    return _raw(np.ascontiguousarray(a, dtype=DTYPES[dtype]), dtype)


def _raw(a: np.ndarray, dtype: str) -> dict:
    return {"dtype": dtype, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict) -> np.ndarray:
    """→ a float32 array."""
    if d.get("dtype") not in DTYPES:
        raise ModelFileError(f"array dtype {d.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    a = np.frombuffer(base64.b64decode(d["base64"]), dtype=DTYPES[d["dtype"]]).astype(np.float32)
    a = a.reshape(d["shape"])
    return a * decode_array(d["scale"]) if d["dtype"] == "int8" else a


@dataclass
class Head:
    """logits = features · weightᵀ + bias; ``weight`` (K, F), ``bias`` (K,)."""

    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        # einsum, not @: a batch's products are tiny, and BLAS would start threads of its own that
        # compete with the model and the decoders (measured: 400 → 244 img/s end to end on 2 cores).
        return np.einsum("nf,kf->nk", features, self.weight) + self.bias

    def class_maps(self, maps: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Class-activation maps (N, H, W) of class ``classes[i]`` for image i, from maps (N, F, H, W).

        Exact for a linear head over average-pooled maps: the spatial mean of a map plus the bias is
        the logit, so each cell's value is its share of the evidence for the class.
        """
        return np.einsum("nf,nfhw->nhw", self.weight[classes], maps)

    def to_dict(self) -> dict:
        return {"weight": encode_array(self.weight), "bias": encode_array(self.bias)}

    @classmethod
    def from_dict(cls, d: dict) -> Head:
        return cls(decode_array(d["weight"]), decode_array(d["bias"]))


@dataclass
class Neighbours:
    """One descriptor's distance to the k-th nearest reference image, in its kept directions.

    The descriptor (``source``): ``"texture"``, the spatial standard deviation of each channel of the last
    feature map, or ``"features"``, the pooled features the head reads. It is standardised per dimension
    (``centre``, ``scale``; optional), L2-normalised and centred (``mean``); ``basis`` (C, D) keeps its D
    main directions of the reference images. With ``reference_residual`` (M,) the rest of the descriptor
    counts as one more orthogonal direction (its norm); without it, distances are in the kept directions
    only. ``threshold``: the raw distance at which this descriptor alone says ``unknown``.
    """

    source: str
    threshold: float
    mean: np.ndarray  # (C,)
    basis: np.ndarray  # (C, D)
    reference: np.ndarray  # (M, D)
    reference_residual: np.ndarray | None = None  # (M,)
    k: int = 5
    centre: np.ndarray | None = None  # (C,)
    scale: np.ndarray | None = None  # (C,)

    def __post_init__(self):
        # Each reference's squared norm, residual included: constant, so computed once.
        self._reference_sq = (self.reference * self.reference).sum(1)
        if self.reference_residual is not None:
            self._reference_sq = self._reference_sq + self.reference_residual**2

    def embed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C) descriptor → coordinates (N, D) and residual norms (N,) (None without residuals)."""
        if self.scale is not None:
            x = (x - self.centre) / self.scale
        z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) - self.mean
        coords = np.einsum("nc,cd->nd", z, self.basis)
        if self.reference_residual is None:
            return coords, None
        return coords, np.sqrt(np.maximum((z * z).sum(1) - (coords * coords).sum(1), 0.0))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """(N, C) descriptor → (N,) distance to the k-th nearest reference, before the threshold."""
        return self.raw_from_embedding(*self.embed(x))

    def raw_from_embedding(self, q: np.ndarray, q_res: np.ndarray | None = None) -> np.ndarray:
        """The same from ``embed``'s coordinates (N, D) and residual norms (N,)."""
        # |q − r|² = |q|² + |r|² − 2 q·r in the kept directions, plus both residuals, taken as
        # orthogonal (the residual space is where the reference images barely vary). A prediction's
        # batch: einsum (see Head); a re-score of thousands of stored rows: BLAS, whose threads pay off.
        qr = q @ self.reference.T if len(q) > 256 else np.einsum("nd,md->nm", q, self.reference)
        q_sq = (q * q).sum(1) if q_res is None or self.reference_residual is None else (q * q).sum(1) + q_res**2
        d2 = q_sq[:, None] + self._reference_sq[None] - 2 * qr
        k = min(self.k, d2.shape[1])
        return np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))

    def with_references(self, coords: np.ndarray, residual: np.ndarray | None = None) -> Neighbours:
        """A copy with more reference images (``embed``'s output for them), rounded as the file stores them."""
        res = self.reference_residual
        if res is not None:
            res = np.concatenate([res, residual])
        return Neighbours(
            self.source,
            self.threshold,
            self.mean,
            self.basis,
            as_stored(np.concatenate([self.reference, coords]), self.stored_as[1]),
            res,
            self.k,
            self.centre,
            self.scale,
        )

    @property
    def stored_as(self) -> tuple[str, str]:
        """How the file keeps the basis and the references: the features part's are the largest arrays of
        the file (1792 × 256 and 5386 × 256), so int8 keeps the bundled file under 8 MB."""
        return ("int8", "int8") if self.source == "features" else ("float32", "float16")

    def to_dict(self) -> dict:
        d = {
            "source": self.source,
            "threshold": float(self.threshold),
            "k": int(self.k),
            "mean": encode_array(self.mean),
            "basis": encode_array(self.basis, self.stored_as[0]),
            "reference": encode_array(self.reference, self.stored_as[1]),
        }
        if self.reference_residual is not None:
            d["reference_residual"] = encode_array(self.reference_residual)
        if self.scale is not None:
            d["centre"], d["scale"] = encode_array(self.centre), encode_array(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Neighbours:
        if d.get("source", "texture") not in ("texture", "features"):
            raise ValueError(f"unknown novelty source {d.get('source')!r}")
        opt = {k: decode_array(d[k]) if k in d else None for k in ("reference_residual", "centre", "scale")}
        return cls(
            d.get("source", "texture"),
            float(d["threshold"]),
            decode_array(d["mean"]),
            decode_array(d["basis"]),
            decode_array(d["reference"]),
            opt["reference_residual"],
            int(d.get("k", 5)),
            opt["centre"],
            opt["scale"],
        )


def as_stored(a: np.ndarray, dtype: str = "float16") -> np.ndarray:
    """An array rounded as the file keeps it (``encode_array``), so a threshold fitted here fits the file."""
    return decode_array(encode_array(a, dtype))


@dataclass
class Novelty:
    """How far an image is from the training images, over the threshold (``unknown`` ⇔ novelty > 1).

    The weighted geometric mean of its ``parts``' distances, each over its own threshold (``Neighbours``),
    over ``threshold``: the pooled features standardised per dimension, nearest training image (which
    notices a new kind of rover image), and the texture (which notices photos, charts, sky, space and
    synthetic frames). A geometric mean ranks images the same whatever each part's own threshold is: the
    parts' distances need no common scale. docs/trust.md has the numbers and
    experiments/results/novelty_methods.md the methods compared. A part whose input is not given (a
    stored texture embedding without the features) is left out, the other weights renormalised.
    """

    parts: list[Neighbours]
    weights: dict = field(default_factory=dict)  # source → exponent (default: equal)
    threshold: float = 1.0
    info: dict = field(default_factory=dict)  # how it was fitted: target flag rate, measured rates

    def combine(self, raw: dict) -> np.ndarray:
        """{source: raw distances (N,)} → (N,) weighted geometric mean of distance / part threshold, before
        ``threshold``; parts absent from ``raw`` are left out."""
        parts = [p for p in self.parts if raw.get(p.source) is not None]
        if not parts:
            raise ValueError(f"novelty needs {' or '.join(p.source for p in self.parts)}")
        if len(parts) == 1:
            # One part: its distance over its threshold in its own float32, exactly as texture-only files
            # were scored before the two-part novelty (predict's output stays byte-identical).
            return raw[parts[0].source] / parts[0].threshold
        w = np.array([self.weights.get(p.source, 1.0) for p in parts])
        w = w / w.sum()
        logs = [wi * np.log(np.maximum(raw[p.source] / p.threshold, 1e-12)) for wi, p in zip(w, parts, strict=True)]
        return np.exp(np.sum(logs, axis=0))

    def part(self, source: str) -> Neighbours | None:
        return next((p for p in self.parts if p.source == source), None)

    def __call__(self, texture: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        """(N,) novelty from the texture (N, C) and the pooled features (N, F)."""
        return self.score(self.raw(texture, features))

    def raw(self, texture: np.ndarray | None, features: np.ndarray | None = None) -> dict:
        """{source: (N,) raw distance} of the parts whose input is given."""
        inputs = {"texture": texture, "features": features}
        return {p.source: p.raw(inputs[p.source]) for p in self.parts if inputs[p.source] is not None}

    def score(self, raw: dict) -> np.ndarray:
        """(N,) novelty from ``raw``'s distances: their combination over the joint threshold."""
        return self.combine(raw) / self.threshold

    def part_score(self, raw: dict, source: str) -> np.ndarray | None:
        """(N,) one part's distance over its own threshold (None if the part or its input is absent)."""
        part = self.part(source)
        if part is None or raw.get(source) is None:
            return None
        return raw[source] / part.threshold

    def embed(self, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) texture → its part's coordinates (N, D) and residual norms (N,): what the archive stores."""
        part = self.part("texture")
        if part is None:
            raise ValueError("this novelty has no texture part to embed")
        return part.embed(texture)

    def from_embedding(self, embedding: np.ndarray | None, features: np.ndarray | None = None) -> np.ndarray:
        """Novelty from stored (N, D + 1) texture embeddings (``embed``'s coordinates with the residual norm
        last, so a re-score needs no image) and the pooled features (N, F); either may be None."""
        return self.score(self.raw_from_embedding(embedding, features))

    def raw_from_embedding(self, embedding: np.ndarray | None, features: np.ndarray | None = None) -> dict:
        """``raw`` from stored texture embeddings (see ``from_embedding``) and the pooled features."""
        raw = {}
        tex = self.part("texture")
        if tex is not None and embedding is not None:
            raw["texture"] = tex.raw_from_embedding(embedding[:, :-1], embedding[:, -1])
        feat = self.part("features")
        if feat is not None and features is not None:
            raw["features"] = feat.raw(features)
        return raw

    def with_references(self, embedding: np.ndarray | None, features: np.ndarray | None) -> Novelty:
        """A copy whose references also hold these images (stored texture embeddings (N, D + 1) and pooled
        features (N, F)), thresholds kept: a curator's corrections become known images."""
        parts = []
        for p in self.parts:
            if p.source == "texture" and embedding is not None and len(embedding):
                p = p.with_references(embedding[:, :-1], embedding[:, -1])
            elif p.source == "features" and features is not None and len(features):
                p = p.with_references(p.embed(np.asarray(features, np.float32))[0])
            parts.append(p)
        n = len(embedding) if embedding is not None else len(features) if features is not None else 0
        return Novelty(parts, self.weights, self.threshold, {**self.info, "corrections_added": n})

    def to_dict(self) -> dict:
        return {
            "method": "knn-geomean",
            "parts": [p.to_dict() for p in self.parts],
            "weights": {k: float(v) for k, v in self.weights.items()},
            "threshold": float(self.threshold),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Novelty:
        if d.get("method") == "knn-texture":  # files before the features part: the texture alone
            return cls([Neighbours.from_dict({**d, "source": "texture"})], info=dict(d.get("info", {})))
        if d.get("method") != "knn-geomean":
            raise ModelFileError(f"unknown novelty method {d.get('method')!r}")
        parts = [Neighbours.from_dict(p) for p in d["parts"]]
        weights = {k: float(v) for k, v in d.get("weights", {}).items()}
        return cls(parts, weights, float(d.get("threshold", 1.0)), dict(d.get("info", {})))


@dataclass
class Calibration:
    """Probabilities = softmax(logits / T) with a temperature that grows with the novelty:
    T = exp(log_t + slope · log(novelty)), novelty clipped to [1e-3, 1e3].

    ``slope`` = 0 is plain temperature scaling. Fitted by minimising the negative log-likelihood of
    held-out predictions, each image predicted by a head fitted without its campaign
    (``marsvision.head.trust``): the images furthest from the training ones are the ones the model
    gets wrong most often, so their confidence is lowered more.

    ``reads``: which novelty the law was fitted on, so the one it is given (``Trust.calibration_input``):
    ``"novelty"``, the file's novelty (files before the features part), or ``"texture"``, the texture
    part's distance over its own threshold. A two-part file's law reads the texture, as it was fitted: the
    features part's threshold is set for the ``unknown`` flag, and a law refitted on it would change every
    confidence for a flag's sake.
    """

    log_t: float = 0.0
    slope: float = 0.0
    info: dict = field(default_factory=dict)
    reads: str = "novelty"

    def temperature(self, novelty: np.ndarray | None, n: int) -> np.ndarray:
        t = np.full(n, self.log_t)
        if self.slope and novelty is not None:
            t = t + self.slope * np.log(np.clip(novelty, 1e-3, 1e3))
        return np.exp(t)

    def __call__(self, logits: np.ndarray, novelty: np.ndarray | None = None) -> np.ndarray:
        return softmax(logits / self.temperature(novelty, len(logits))[:, None])

    def to_dict(self) -> dict:
        d = {"method": "novelty_temperature", "log_t": float(self.log_t), "slope": float(self.slope)}
        if self.reads != "novelty":  # files of the one-part novelty keep their bytes
            d["reads"] = self.reads
        return {**d, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        if d.get("method") != "novelty_temperature":
            raise ModelFileError(f"unknown calibration method {d.get('method')!r}")
        if d.get("reads", "novelty") not in ("novelty", "texture"):
            raise ModelFileError(f"calibration reads an unknown novelty {d.get('reads')!r}")
        return cls(float(d["log_t"]), float(d.get("slope", 0.0)), dict(d.get("info", {})), d.get("reads", "novelty"))


@dataclass
class Trust:
    """A model file's calibration and novelty data; either may be absent (raw softmax, no novelty)."""

    calibration: Calibration | None = None
    novelty: Novelty | None = None

    def to_dict(self) -> dict:
        return {
            "calibration": self.calibration and self.calibration.to_dict(),
            "novelty": self.novelty and self.novelty.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> Trust:
        d = d or {}
        return cls(
            Calibration.from_dict(d["calibration"]) if d.get("calibration") else None,
            Novelty.from_dict(d["novelty"]) if d.get("novelty") else None,
        )

    def apply(
        self, logits: np.ndarray, texture: np.ndarray | None, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, K), novelty (N,) or None) from the logits, the texture and the pooled features."""
        raw = None
        if self.novelty is not None and (texture is not None or features is not None):
            raw = self.novelty.raw(texture, features)
        return self._apply_raw(logits, raw)

    def apply_embedded(
        self, logits: np.ndarray, embedding: np.ndarray | None, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``apply`` from stored texture embeddings (``Novelty.from_embedding``) instead of the texture; pass
        the stored features too, or the novelty is the texture's alone."""
        raw = None
        if self.novelty is not None and (embedding is not None or features is not None):
            raw = self.novelty.raw_from_embedding(embedding, features)
        return self._apply_raw(logits, raw)

    def _apply_raw(self, logits: np.ndarray, raw: dict | None) -> tuple[np.ndarray, np.ndarray | None]:
        novelty = None if raw is None else self.novelty.score(raw)
        return self.probabilities(logits, self.calibration_input(raw, novelty)), novelty

    def calibration_input(self, raw: dict | None, novelty: np.ndarray | None) -> np.ndarray | None:
        """What the calibration's temperature law reads (``Calibration.reads``), from the novelty parts'
        raw distances (``Novelty.raw``) and the novelty: the texture part alone for a law fitted on it."""
        if self.calibration is None or self.calibration.reads == "novelty" or raw is None:
            return novelty
        return self.novelty.part_score(raw, self.calibration.reads)

    def probabilities(self, logits: np.ndarray, novelty: np.ndarray | None) -> np.ndarray:
        """Calibrated probabilities, or the plain softmax for a model without calibration; ``novelty`` is
        what the law reads (``calibration_input``)."""
        return self.calibration(logits, novelty) if self.calibration is not None else softmax(logits)

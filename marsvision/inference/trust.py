"""What a model file says about how far to trust a prediction, applied in numpy (no torch, no scikit-learn).

- ``Head``: the linear classifier over pooled features (logits = F·Wᵀ + b), and the class-activation maps.
- ``Novelty``: how far an image is from the training images, in units of the threshold above which
  the image is flagged ``unknown`` (so ``unknown`` ⇔ novelty > 1).
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


DTYPES = {"float32": "<f4", "float16": "<f2"}


def encode_array(a: np.ndarray, dtype: str = "float32") -> dict:
    """An array as JSON-able data: base64 of its little-endian float32 (or, to halve a large reference
    set, float16) bytes."""
    a = np.ascontiguousarray(a, dtype=DTYPES[dtype])
    return {"dtype": dtype, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict) -> np.ndarray:
    """→ a float32 array."""
    if d.get("dtype") not in DTYPES:
        raise ModelFileError(f"array dtype {d.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    a = np.frombuffer(base64.b64decode(d["base64"]), dtype=DTYPES[d["dtype"]]).astype(np.float32)
    return a.reshape(d["shape"])


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
class Novelty:
    """How far an image is from the training images, over the threshold (``unknown`` ⇔ novelty > 1).

    The image is described by its *texture*: the spatial standard deviation of each channel of the last
    feature map (the first ``channels`` channels of the maps), which separates the MSL frames from
    photos, charts, sky, space and synthetic frames better than the pooled features do
    (benchmarks/results/trust.md). The descriptor is L2-normalised and centred; ``basis`` (C, D) keeps
    its D main directions of the training images and the residual norm the rest, so the reference set
    ``reference`` (M, D) plus ``reference_residual`` (M,) fits in the model file. The raw score is the
    distance to the ``k``-th nearest reference image, divided by ``threshold``.
    """

    threshold: float
    mean: np.ndarray  # (C,)
    basis: np.ndarray  # (C, D)
    reference: np.ndarray  # (M, D)
    reference_residual: np.ndarray  # (M,)
    k: int = 5
    channels: int = 0  # how many leading channels of the feature maps the texture takes (0: all)
    info: dict = field(default_factory=dict)  # how it was fitted: target flag rate, measured rates

    def embed(self, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) texture → coordinates (N, D) and residual norms (N,)."""
        z = texture / np.maximum(np.linalg.norm(texture, axis=1, keepdims=True), 1e-12) - self.mean
        coords = np.einsum("nc,cd->nd", z, self.basis)
        return coords, np.sqrt(np.maximum((z * z).sum(1) - (coords * coords).sum(1), 0.0))

    def __post_init__(self):
        # Each reference's squared norm, residual included: constant, so computed once.
        self._reference_sq = (self.reference * self.reference).sum(1) + self.reference_residual**2

    def raw(self, texture: np.ndarray) -> np.ndarray:
        """(N, C) texture → (N,) distance to the k-th nearest reference, before the threshold."""
        return self.raw_from_embedding(*self.embed(texture))

    def raw_from_embedding(self, q: np.ndarray, q_res: np.ndarray) -> np.ndarray:
        """The same from the coordinates (N, D) and residual norms (N,) ``embed`` gives (the archive
        stores them, so a re-score needs no image)."""
        # |q − r|² = |q|² + |r|² − 2 q·r in the kept directions, plus both residuals, taken as
        # orthogonal (the residual space is where the training images barely vary). A prediction's
        # batch: einsum (see Head); a re-score of thousands of stored rows: BLAS, whose threads pay off.
        qr = q @ self.reference.T if len(q) > 256 else np.einsum("nd,md->nm", q, self.reference)
        d2 = ((q * q).sum(1) + q_res**2)[:, None] + self._reference_sq[None] - 2 * qr
        k = min(self.k, d2.shape[1])
        return np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))

    def __call__(self, texture: np.ndarray) -> np.ndarray:
        return self.raw(texture) / self.threshold

    def from_embedding(self, embedding: np.ndarray) -> np.ndarray:
        """Novelty from stored (N, D + 1) embeddings: ``embed``'s coordinates with the residual norm last
        (what the archive keeps, so a re-score needs no image)."""
        return self.raw_from_embedding(embedding[:, :-1], embedding[:, -1]) / self.threshold

    def to_dict(self) -> dict:
        return {
            "method": "knn-texture",
            "threshold": float(self.threshold),
            "k": int(self.k),
            "channels": int(self.channels),
            "mean": encode_array(self.mean),
            "basis": encode_array(self.basis),
            "reference": encode_array(self.reference, "float16"),
            "reference_residual": encode_array(self.reference_residual),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Novelty:
        if d.get("method") != "knn-texture":
            raise ModelFileError(f"unknown novelty method {d.get('method')!r}")
        return cls(
            float(d["threshold"]),
            decode_array(d["mean"]),
            decode_array(d["basis"]),
            decode_array(d["reference"]),
            decode_array(d["reference_residual"]),
            int(d.get("k", 5)),
            int(d.get("channels", 0)),
            dict(d.get("info", {})),
        )


@dataclass
class Calibration:
    """Probabilities = softmax(logits / T) with a temperature that grows with the novelty:
    T = exp(log_t + slope · log(novelty)), novelty clipped to [1e-3, 1e3].

    ``slope`` = 0 is plain temperature scaling. Fitted by minimising the negative log-likelihood of
    held-out predictions, each image predicted by a head fitted without its campaign
    (``marsvision.head.trust``): the images furthest from the training ones are the ones the model
    gets wrong most often, so their confidence is lowered more.
    """

    log_t: float = 0.0
    slope: float = 0.0
    info: dict = field(default_factory=dict)

    def temperature(self, novelty: np.ndarray | None, n: int) -> np.ndarray:
        t = np.full(n, self.log_t)
        if self.slope and novelty is not None:
            t = t + self.slope * np.log(np.clip(novelty, 1e-3, 1e3))
        return np.exp(t)

    def __call__(self, logits: np.ndarray, novelty: np.ndarray | None = None) -> np.ndarray:
        return softmax(logits / self.temperature(novelty, len(logits))[:, None])

    def to_dict(self) -> dict:
        return {
            "method": "novelty_temperature",
            "log_t": float(self.log_t),
            "slope": float(self.slope),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        if d.get("method") != "novelty_temperature":
            raise ModelFileError(f"unknown calibration method {d.get('method')!r}")
        return cls(float(d["log_t"]), float(d.get("slope", 0.0)), dict(d.get("info", {})))


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

    def apply(self, logits: np.ndarray, texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, K), novelty (N,) or None) from the logits and the texture descriptor."""
        novelty = self.novelty(texture) if self.novelty is not None and texture is not None else None
        return self.probabilities(logits, novelty), novelty

    def apply_embedded(self, logits: np.ndarray, embedding: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``apply`` from stored texture embeddings (``Novelty.from_embedding``) instead of the texture."""
        novelty = self.novelty.from_embedding(embedding) if self.novelty is not None and embedding is not None else None
        return self.probabilities(logits, novelty), novelty

    def probabilities(self, logits: np.ndarray, novelty: np.ndarray | None) -> np.ndarray:
        """Calibrated probabilities, or the plain softmax for a model without calibration."""
        return self.calibration(logits, novelty) if self.calibration is not None else softmax(logits)

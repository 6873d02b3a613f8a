"""The downlink plan: which of a sol's images to send first, and why, within a budget.

Greedy selection of a submodular objective over the model's features (``Prediction.features``,
centred and L2-normalised, so similarity is a cosine clipped at 0):

    gain(j) = w(class of j) · [ Σ_i max(0, s(i, j) − covered_i) / N  +  β · Σ_k p_jk · unsent_k
                                +  α · min(novelty_j, cap) · (1 − earth_j)  +  γ · doubt_j
                                +  ρ · confidence_j / (1 + n(class of j) / scale) ]

- the first term is facility-location coverage of the sol's feature space: how much closer image j
  brings the sol's images to something Earth has. ``covered_i`` starts at λ times image i's similarity
  to its nearest image on Earth (``earth_i``: the state's seed and earlier plans' sent images) and rises
  as images are picked, so a second image of a scene already picked gains little;
- the second is probabilistic coverage of the sol's classes: ``p_jk`` the model's probability that j
  shows class k, ``unsent_k`` the chance that no pick so far shows it;
- the third is the model's novelty (its distance to the training images, ``Prediction.novelty``),
  counted for what Earth does not yet hold something alike; the fourth, the model's doubt (an image of
  a kind it never saw spreads its probability): the entropy of its probabilities over log K
  (``doubt_entropy``), else 1 − confidence; the fifth, the rarity on Earth of the predicted class
  (``n``: Earth's images of that class, from the state's labels);
- ``w``: the class weights of a priorities file (1 when none).

A pick's near-duplicates (similarity ≥ ``near_duplicate``), and from the start those of an image on Earth,
compete on at ``duplicate_discount`` d of their gain (0: only once every other image is ranked;
``send_duplicates`` False: never sent) and say "near-duplicate of rank N". With ``rare_duplicates`` the
discount is d^(1 − r), r the rarity term's confidence / (1 + n/scale) in [0, 1], so a rare class's burst of
frames still gets sent while a common class's repeats are cut; with ``earth_duplicate_class`` a near-duplicate
of an image on Earth keeps its full class-coverage term (it still shows its class this sol). ``class_decay``
δ divides an image's bonuses (novelty, doubt, rarity) by 1 + δ · Σ_k p_jk · (picks of class k so far). An
image Earth already has (similarity ≥ ``on_earth``) is never sent and ranks after every other, so that it
covers nothing for an image that can be sent. A count budget takes the first picks; a byte budget picks by gain per byte
among the images that still fit. Ties go to the earlier input, so the same inputs and
state give the same plan. Numbers behind the defaults: docs/triage.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import MarsvisionError
from .state import Earth, unit_rows


@dataclass(frozen=True)
class Budget:
    """Exactly one of: a fraction of the readable images, a number of images, a number of bytes."""

    fraction: float = 0.0
    count: int = 0
    bytes: int = 0

    def __post_init__(self):
        given = [n for n, v in (("fraction", self.fraction), ("count", self.count), ("bytes", self.bytes)) if v]
        if len(given) != 1 or min(self.fraction, self.count, self.bytes) < 0 or self.fraction > 1:
            raise MarsvisionError(
                "give exactly one budget: --budget-fraction F (0 < F ≤ 1), --budget-count N or --budget-bytes B"
            )

    def images(self, n: int) -> int | None:
        """How many of ``n`` images the budget sends (None: it is a byte budget). A fraction rounds up,
        so every sol sends at least one image."""
        if self.bytes:
            return None
        return min(n, self.count) if self.count else min(n, math.ceil(self.fraction * n - 1e-9))


@dataclass(frozen=True)
class PlanParams:
    """The selection's constants; the defaults were chosen on the val replay (docs/triage.md)."""

    near_duplicate: float = 0.9  # cosine similarity at or above which two images are near-duplicates
    novelty_weight: float = 0.5  # α: novelty against coverage
    class_weight: float = 1.0  # β: the expected number of the sol's classes (as the model sees them) not yet sent
    earth_credit: float = 1.0  # λ: how much an image alike on Earth counts as already covered (0: only this sol)
    uncertainty_weight: float = 10.0  # γ: a bonus for an image the model is unsure of (1 − confidence)
    rarity_weight: float = 3.0  # ρ: a bonus for an image of a class Earth holds few of
    rarity_scale: float = 40.0  # a class with this many images on Earth gets half the rarity bonus
    novelty_cap: float = 3.0  # novelty beyond this counts no more (a photo of a cat is not 100× more worth)
    new_view: float = 0.5  # 1 − covered at or above this: nothing on Earth or ranked before is alike
    send_duplicates: bool = True  # near-duplicates may be sent (else never, whatever the budget leaves)
    duplicate_discount: float = 0.25  # a near-duplicate's gain × this (0: it waits until every other is ranked)
    # δ: per-class diminishing returns within a sol: an image's bonuses (novelty, doubt, rarity) are divided by
    # 1 + δ · (the expected number of picks so far that show its class), over the model's probabilities
    class_decay: float = 0.0
    # A near-duplicate of an image on Earth (not of a pick) keeps its full class-coverage term: it still shows
    # its class this sol (the discount still applies to its view and bonuses).
    earth_duplicate_class: bool = True
    # A near-duplicate's discount d becomes d^(1 − r), r = confidence / (1 + n/rarity_scale) the rarity of its
    # predicted class on Earth: a rare class's second frame keeps most of its gain, a common class's is cut.
    rare_duplicates: bool = True
    doubt_entropy: bool = True  # the doubt γ weighs: the probabilities' entropy over log K (else 1 − confidence)
    # At or above this similarity to an image on Earth, the image is one Earth already has (the same frame
    # again: its cosine to itself is 1 up to float rounding) and it is never sent.
    on_earth: float = 0.999


@dataclass
class PlanRow:
    rank: int
    path: str
    send: int
    reason: str
    label: str | None
    confidence: float | None
    novelty: float | None
    bytes: int | None
    cumulative_bytes: int
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    rows: list[PlanRow]
    sent: list[int]  # indices into the inputs, in send order
    center: np.ndarray | None  # the centre the similarities used (kept in the state)
    features: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # sent inputs' features


def earth_similarity(z: np.ndarray, earth: Earth | None) -> np.ndarray:
    """Each unit row's similarity to its nearest image on Earth (0 when Earth holds none)."""
    best = np.zeros(len(z), np.float32)
    if earth is not None and len(earth):
        for chunk in earth.chunks():
            best = np.maximum(best, (z @ chunk.T).max(1))
    return best


def plan_downlink(
    predictions: Sequence,
    sizes: Sequence[int | None],
    budget: Budget,
    earth: Earth | None = None,
    weights: dict[str, float] | None = None,
    params: PlanParams | None = None,
) -> Plan:
    """Rank precomputed predictions (``Prediction``-like: ok, source, label, confidence, novelty,
    probabilities, features, error) with their file sizes in bytes; one row per input, in send order."""
    params = params or PlanParams()
    good = [i for i, p in enumerate(predictions) if p.ok and p.features is not None]
    n = len(good)
    order: list[int] = []  # positions in ``good``, in rank order
    reasons: dict[int, str] = {}
    dup_of: dict[int, int] = {}
    center = None
    is_dup = on_earth = np.zeros(n, bool)
    if n:
        feats = np.stack([np.asarray(predictions[i].features, np.float32) for i in good])
        center = earth.center if earth is not None and earth.center is not None else feats.mean(0)
        z = unit_rows(feats, center)
        earth_sim = np.clip(earth_similarity(z, earth), 0.0, 1.0)
        sim = np.clip(z @ z.T, 0.0, None)
        novelty = np.array([predictions[i].novelty or 0.0 for i in good], np.float32)
        w = np.array([(weights or {}).get(predictions[i].label, 1.0) for i in good], np.float32)
        nov_term = params.novelty_weight * np.minimum(novelty, params.novelty_cap) * (1.0 - earth_sim)
        conf = np.array([predictions[i].confidence or 0.0 for i in good], np.float32)
        probs = [predictions[i].probabilities for i in good]
        probs = np.stack(probs).astype(np.float32) if all(q is not None for q in probs) else np.zeros((n, 1))
        if params.doubt_entropy and probs.shape[1] > 1:  # the model's doubt as its normalised entropy
            doubt = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(1) / np.log(probs.shape[1])
        else:
            doubt = 1.0 - conf
        nov_term = nov_term + params.uncertainty_weight * doubt
        discount = np.full(n, params.duplicate_discount, np.float32)
        if params.rarity_weight and earth is not None and earth.labels:
            counts = earth.class_counts()
            have = np.array([counts.get(predictions[i].label, 0) for i in good], np.float32)
            rarity = conf / (1.0 + have / params.rarity_scale)
            nov_term = nov_term + params.rarity_weight * rarity
            if params.rare_duplicates:  # a near-duplicate of a rare class keeps more of its gain: d^(1 − rarity)
                discount = params.duplicate_discount ** (1.0 - np.clip(rarity, 0.0, 1.0))
        picked_k = np.zeros(probs.shape[1], np.float32)  # per class: the expected picks so far that show it
        unsent = np.ones(probs.shape[1], np.float32)  # per class: the chance no pick so far shows it
        covered = params.earth_credit * earth_sim
        size = np.array([max(1, sizes[i] or 1) for i in good], np.float64)
        left = budget.bytes
        open_, is_dup = np.ones(n, bool), np.zeros(n, bool)
        # Near-duplicates of what Earth has compete at the discount from the start, like those of a pick.
        is_dup |= earth_sim >= params.near_duplicate
        on_earth = earth_sim >= params.on_earth
        earth_dup = is_dup.copy()
        while open_.any():
            # Near-duplicates of a pick compete at a discount, or (discount 0) once every other image is ranked.
            pool = open_ & ~is_dup if params.duplicate_discount == 0 and (open_ & ~is_dup).any() else open_
            # An image Earth already has is never sent, so it must not cover the sol for one that can be.
            pool = pool & ~on_earth if (pool & ~on_earth).any() else pool
            new_class = params.class_weight * (probs @ unsent)
            bonus = nov_term / (1.0 + params.class_decay * (probs @ picked_k)) if params.class_decay else nov_term
            rest = np.maximum(sim - covered[:, None], 0.0).sum(0) / n + bonus
            if params.duplicate_discount:
                rest = np.where(is_dup, rest * discount, rest)
                if not params.earth_duplicate_class:
                    new_class = np.where(is_dup, new_class * discount, new_class)
                else:  # a near-duplicate of an image on Earth still shows its class this sol
                    new_class = np.where(is_dup & ~earth_dup, new_class * discount, new_class)
            gain = w * (rest + new_class)
            score = np.where(pool, gain, -np.inf)
            if budget.bytes:
                fits = pool & (size <= left)
                if fits.any():  # knapsack-like: the most gain per byte among what still fits
                    score = np.where(fits, gain / size, -np.inf)
                    left -= size[int(np.argmax(score))]
            j = int(np.argmax(score))
            reasons[j] = (
                "novel"
                if novelty[j] > 1 and max(covered[j], earth_sim[j]) < params.near_duplicate
                else "priority class"
                if w[j] > 1
                else "new view"
                if 1 - max(covered[j], earth_sim[j]) >= params.new_view
                else "routine"
            )
            order.append(j)
            open_[j] = False
            covered = np.maximum(covered, sim[:, j])
            unsent *= 1.0 - probs[j]
            picked_k += probs[j]
            if j not in dup_of:
                for d in np.flatnonzero(open_ & ~is_dup & (sim[:, j] >= params.near_duplicate)):
                    dup_of[int(d)] = j
                    is_dup[d] = True
    eligible = [j for j in order if (params.send_duplicates or not is_dup[j]) and not on_earth[j]]
    # Who is sent: a count budget, the first eligible picks; a byte budget, the eligible picks in order
    # while they fit.
    limit = budget.images(n)
    sent_pos: list[int] = []
    if limit is not None:
        sent_pos = eligible[:limit]
    else:
        used = 0
        for j in eligible:
            b = int(sizes[good[j]] or 0)
            if used + b <= budget.bytes:
                sent_pos.append(j)
                used += b
    sent_set = set(sent_pos)
    rows: list[PlanRow] = []
    total = 0
    # Sent picks first, then the rest in pick order, then unreadable inputs.
    sequence = sent_pos + [j for j in order if j not in sent_set]
    final_rank = {j: r for r, j in enumerate(sequence, 1)}
    for j in sequence:
        p, size_j = predictions[good[j]], sizes[good[j]]
        total += int(size_j or 0)
        reason = (
            "already on Earth"
            if on_earth[j]
            else f"near-duplicate of rank {final_rank[dup_of[j]]}"
            if j in dup_of
            else "near-duplicate of an image on Earth"
            if is_dup[j]
            else reasons[j]
        )
        rows.append(
            PlanRow(
                len(rows) + 1,
                str(p.source),
                int(j in sent_set),
                reason,
                p.label,
                None if p.confidence is None else round(float(p.confidence), 4),
                None if p.novelty is None else round(float(p.novelty), 4),
                size_j,
                total,
            )
        )
    readable = set(good)
    for i, p in enumerate(predictions):
        if i not in readable:
            size_i = sizes[i]
            total += int(size_i or 0)
            error = p.error or "no features"
            rows.append(PlanRow(len(rows) + 1, str(p.source), 0, "unreadable", None, None, None, size_i, total, error))
    sent = [good[j] for j in sent_pos]
    return Plan(rows, sent, center, {i: np.asarray(predictions[i].features) for i in sent})

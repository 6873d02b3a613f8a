"""`marsvision refit`: fit the head on the training images plus the curators' corrections, from stored
feature vectors (no image is decoded), and write a new model version.

The new version is the parent's file with new metadata: the same graph and int8 weights (the quantised
graph ends at the features, so a new head needs no new quantisation), a new head, and refreshed trust
data (the corrected images join the novelty references; with enough corrections the calibration is
chosen on their held-out campaigns). A torch file is written beside it when the parent has one and
torch is installed. Corrections weigh ``DEFAULT_WEIGHT`` class-balanced training images of their class
(chosen on val by benchmarks/active_learning.py). A bad labels CSV is a one-line error naming the line,
and nothing is written.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select

from ..archive.db import DB_HELP, Correction, Image, ImageVectors, ModelVersion, TrainingImage, open_engine, sessions
from ..archive.records import from_blob, to_blob
from ..archive.rescore import Activation, activate
from ..archive.versions import VersionError, active_version, register
from ..atomic import atomic_write
from ..data.msl import DATA_HELP
from ..errors import MarsvisionError
from ..head.fit import fit_head, fold_head
from ..inference.trust import Calibration, Head, Trust
from ..model_file import ModelFileError
from .model_files import ParentFile, write_version
from .strategies import DEFAULT_WEIGHT, sample_weights

MIN_FOR_TEMPERATURE = 25  # corrections needed before the temperature is refitted on them
CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9 _-]{0,63}$")


class LabelsError(MarsvisionError, ValueError):
    """A labels CSV that cannot be used: the message names the line and the reason."""


@dataclass
class RefitConfig:
    """Refit the model's head on its training images plus the curators' corrections (no image decoded)."""

    db: str = field(default="", metadata={"help": DB_HELP})
    labels: str = field(
        default="",
        metadata={
            "help": (
                "corrections from this CSV (columns: image (path, sha256 or archive "
                "id), label) instead of the archive's"
            )
        },
    )
    new_classes: str = field(
        default="", metadata={"help": "comma-separated class names the corrections may add to the model's"}
    )
    data: str = field(
        default="",
        metadata={
            "help": f"the MSL data set, needed once per archive to compute the training images' features; {DATA_HELP}"
        },
    )
    weight: float = field(
        default=DEFAULT_WEIGHT,
        metadata={"help": "a correction weighs this many class-balanced training images of its class"},
    )
    out: str = field(
        default="runs", metadata={"help": "runs root: the new version is written to <out>/refit/<version>/"}
    )
    activate: bool = field(
        default=True, metadata={"help": "make the new version active and re-score the archive with it"}
    )


def refit_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_new: np.ndarray,
    y_new: np.ndarray,
    num_classes: int,
    c: float,
    weight: float = DEFAULT_WEIGHT,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(W (K, F), b (K,)) fitted on training images plus corrections, weighed by ``sample_weights``;
    the solver starts from the head ``start`` when given (``fit_head``)."""
    x = np.concatenate([x_train, x_new]) if len(x_new) else x_train
    y = np.concatenate([y_train, y_new]).astype(np.int64)
    w = sample_weights(y_train, y_new, weight)
    return fold_head(fit_head(x, y, c, sample_weight=w, start=start), num_classes)


def read_labels_csv(path: str, session, classes: list[str]) -> list[tuple[int, str, int]]:
    """(image id, label, line) per row; ``LabelsError`` naming the line of the first bad one."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 (the with below; open's error named alone)
    except OSError as e:
        raise LabelsError(f"{path}: {e.strerror}") from None
    with f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        key = next((k for k in ("image", "path", "sha256", "id") if k in cols), None)
        if key is None or "label" not in cols:
            raise LabelsError(
                f"{path}: line 1: expected columns 'image' (or path, sha256, id) and 'label', got {reader.fieldnames}"
            )
        out, seen = [], {}
        for line, row in enumerate(reader, 2):
            ref, label = (row[cols[key]] or "").strip(), (row[cols["label"]] or "").strip()
            if label not in classes:
                raise LabelsError(
                    f"{path}: line {line}: unknown class {label!r} (not a class of the model; "
                    f"a new one needs --new-classes)"
                )
            image_id = _find_image(session, ref)
            if image_id is None:
                raise LabelsError(f"{path}: line {line}: unknown image {ref!r} (not in the archive; index it first)")
            if image_id in seen:
                raise LabelsError(f"{path}: line {line}: image {ref!r} is already labelled on line {seen[image_id]}")
            seen[image_id] = line
            out.append((image_id, label, line))
    if not out:
        raise LabelsError(f"{path}: no labels")
    return out


def _find_image(session, ref: str) -> int | None:
    if ref.isdigit():
        found = session.get(Image, int(ref))
        return found.id if found else None
    column = Image.sha256 if re.fullmatch(r"[0-9a-f]{64}", ref) else Image.path
    value = ref if column is Image.sha256 else str(Path(ref).resolve())
    return session.scalar(select(Image.id).where(column == value))


def archive_corrections(session) -> list[tuple[int, str, int]]:
    """The latest correction of each corrected image: (image id, label, correction id)."""
    latest = select(func.max(Correction.id)).group_by(Correction.image_id)
    return [(c.image_id, c.label, c.id) for c in session.scalars(select(Correction).where(Correction.id.in_(latest)))]


def training_features(
    make, parent: ModelVersion, parent_file: ParentFile, data: str
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The training images' features (N, F), labels and sols, computed once (with ``data``) and stored."""
    source = parent.info.get("features_from") or parent.version
    with make() as s:
        rows = s.execute(
            select(TrainingImage.features, TrainingImage.label, TrainingImage.sol)
            .where(TrainingImage.features_from == source)
            .order_by(TrainingImage.id)
        ).all()
    if rows:
        return (
            np.stack([from_blob(r.features, "f2") for r in rows]),
            [r.label for r in rows],
            np.array([r.sol if r.sol is not None else -1 for r in rows]),
        )
    if not data:
        raise VersionError(
            "the archive has no training features yet: run `marsvision refit --data DIR` once "
            "(it computes them from the MSL data set with the archive's model, then stores them)"
        )
    from ..data.msl import MSLDataset
    from ..export.trust import embed_split

    splits = (parent_file.meta.get("config", {}) or {}).get("train_splits") or "train"
    print(f"refit: computing the features of the training images ({splits}), once", file=sys.stderr)
    clf = parent_file.classifier()
    try:
        feats, _, classes, sols, paths = embed_split(clf, MSLDataset(data), splits)
    except ModelFileError as e:  # an unreadable training image
        raise VersionError(str(e)) from None
    finally:
        clf.close()
    labels = [clf.class_names[i] for i in classes]
    with make.begin() as s:
        s.execute(delete(TrainingImage).where(TrainingImage.features_from == source))
        s.add_all(
            [
                TrainingImage(
                    features_from=source, split=splits, path=str(p), label=lab, sol=int(sol), features=to_blob(f, "f2")
                )
                for p, lab, sol, f in zip(paths, labels, sols, feats, strict=True)
            ]
        )
    return feats.astype(np.float16).astype(np.float32), labels, sols


def campaign_folds(sols: np.ndarray | None, n: int, k: int = 5) -> np.ndarray:
    """Fold of each correction: ``k`` contiguous sol ranges (a sol never split, so a fold holds whole
    campaigns); by position when the sols are unknown or too few."""
    if sols is None or len(np.unique(sols)) < 2:
        return np.arange(n) % k
    u = np.unique(sols)
    block = np.arange(len(u)) * min(k, len(u)) // len(u)
    return block[np.searchsorted(u, sols)]


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def refreshed_trust(
    parent: Trust, head_fit, x_train, y_train, x_new, y_new, tex_new, weight: float, sols_new=None
) -> Trust:
    """The parent's trust data with the corrected images among the novelty references, and with enough
    corrections, the calibration chosen on their held-out campaigns.

    ``head_fit`` = (W, b, C): the head the fold fits start from (the parent's, which has seen no correction).
    Each correction is predicted by a head fitted without its fold of campaigns (``campaign_folds``). Three
    calibrations compete on these predictions by negative log-likelihood: plain softmax, the parent's, and
    the parent's slope with the level refitted (cross-fitted: fitted on the other folds, scored on each).
    Measured on the test split after 50 review-queue labels (benchmarks/results/refit.md), the level refit
    chosen on test only was beaten by plain softmax; the choice is now made here, without test."""
    from ..head.trust import fit_calibration
    from ..metrics import expected_calibration_error

    novelty = parent.novelty
    if novelty is not None and len(y_new):
        novelty = novelty.with_references(tex_new, x_new)
    calibration = parent.calibration
    if calibration is not None and novelty is not None and len(y_new) >= MIN_FOR_TEMPERATURE:
        folds = campaign_folds(sols_new, len(y_new))
        logits = np.zeros((len(y_new), head_fit[0].shape[0]), np.float32)
        for k in np.unique(folds):
            w, b = refit_head(
                x_train,
                y_train,
                x_new[folds != k],
                y_new[folds != k],
                head_fit[0].shape[0],
                head_fit[2],
                weight,
                start=head_fit[:2],
            )
            logits[folds == k] = x_new[folds == k] @ w.T + b
        # Held out, like the logits: against the parent's references, which do not hold these images
        # (``novelty`` now does, and each correction would find itself at distance 0); what the parent's
        # temperature law reads (``Calibration.reads``: the texture part of a two-part file).
        raw = parent.novelty.raw_from_embedding(tex_new, x_new)
        nov = parent.calibration_input(raw, parent.novelty.score(raw))
        scale = np.exp(calibration.slope * np.log(np.clip(nov, 1e-3, 1e3)))[:, None]

        def level(rows):  # the slope needs many images of every kind of shift; a few corrections move the level
            return fit_calibration(logits[rows] / scale[rows], np.ones(rows.sum()), y_new[rows]).log_t

        crossed = np.zeros_like(logits)
        for k in np.unique(folds):
            crossed[folds == k] = Calibration(level(folds != k), calibration.slope, reads=calibration.reads)(
                logits[folds == k], nov[folds == k]
            )
        candidates = {
            "softmax": (Calibration(0.0, 0.0), None),
            "parent": (calibration, None),
            "level refit": (
                Calibration(level(np.ones(len(y_new), bool)), calibration.slope, reads=calibration.reads),
                crossed,
            ),
        }
        scores = {}
        for name, (cal, probs) in candidates.items():
            probs = cal(logits, nov) if probs is None else probs
            scores[name] = {"nll": _nll(probs, y_new), "ece": expected_calibration_error(probs, y_new)}
        chosen = min(scores, key=lambda n: scores[n]["nll"])
        calibration = Calibration(
            candidates[chosen][0].log_t,
            candidates[chosen][0].slope,
            {
                **calibration.info,
                "refitted_on": f"{len(y_new)} corrections, held out in {len(np.unique(folds))} folds of campaigns",
                "refit_choice": chosen,
                "refit_candidates_held_out": scores,
            },
            candidates[chosen][0].reads,
        )
    return Trust(calibration, novelty)


@dataclass
class RefitResult:
    """What ``run_refit`` wrote and measured (also the run folder's results.json)."""

    version: str
    files: dict  # onnx, torch (None without a torch file) and torch_note: the paths written
    inputs: dict  # parent, corrections, training_images, weight, C, new_classes, source
    fit_seconds: float
    activation: Activation | None = None  # None when not activated
    seconds: float = 0.0


def run_refit(cfg: RefitConfig) -> RefitResult:
    """`marsvision refit`: returns what it wrote and measured (also in the run folder's results.json)."""
    t0 = time.perf_counter()
    engine = open_engine(cfg.db or None)
    make = sessions(engine)
    with make() as s:
        parent = active_version(s)
        if parent is None:
            raise VersionError("the archive has no model yet: index images first (`marsvision index PATH`)")
    parent_file = ParentFile.read(parent.path)  # read once: its metadata now, its graph for the new version
    if parent_file.head is None:
        raise VersionError(f"{parent.path}: refits need a features graph; run `marsvision calibrate` on it first")
    new = [c.strip() for c in cfg.new_classes.split(",") if c.strip()]
    for c in new:
        if not CLASS_NAME.match(c):
            raise LabelsError(f"--new-classes: {c!r} is not a class name (lower case letters, digits, spaces, - _)")
    classes = list(parent_file.class_names) + [c for c in new if c not in parent_file.class_names]
    with make() as s:
        chosen = read_labels_csv(cfg.labels, s, classes) if cfg.labels else archive_corrections(s)
        if not chosen:
            raise VersionError("no corrections to refit with: correct labels in the archive, or pass --labels CSV")
        rows = {
            r.id: r
            for r in s.execute(
                select(ImageVectors.image_id.label("id"), ImageVectors.features, ImageVectors.texture, Image.sol)
                .join(Image, Image.id == ImageVectors.image_id)
                .where(ImageVectors.image_id.in_([c[0] for c in chosen]))
            ).all()
        }
    missing = [c for c in chosen if c[0] not in rows]
    if missing:
        raise VersionError(f"image {missing[0][0]} has no stored features (it could not be read)")
    x_train, names_train, _ = training_features(make, parent, parent_file, cfg.data)
    index = {n: i for i, n in enumerate(classes)}
    y_train = np.array([index[n] for n in names_train])
    x_new = np.stack([from_blob(rows[c[0]].features, "f2") for c in chosen])
    y_new = np.array([index[c[1]] for c in chosen])
    tex_new = (
        np.stack([from_blob(rows[c[0]].texture, "f4") for c in chosen])
        if all(rows[c[0]].texture for c in chosen)
        else None
    )
    sols_new = [rows[c[0]].sol for c in chosen]
    sols_new = np.array(sols_new) if all(v is not None for v in sols_new) else None
    c_value = float(
        (parent_file.meta.get("metrics") or {}).get("C") or (parent_file.meta.get("config") or {}).get("c") or 1.0
    )
    t_fit = time.perf_counter()
    parent_head = (
        np.zeros((len(classes), parent_file.head.weight.shape[1]), np.float32),
        np.full(len(classes), -1e4, np.float32),
    )
    parent_head[0][: len(parent_file.class_names)], parent_head[1][: len(parent_file.class_names)] = (
        parent_file.head.weight,
        parent_file.head.bias,
    )
    w, b = refit_head(x_train, y_train, x_new, y_new, len(classes), c_value, cfg.weight, start=parent_head)
    fit_seconds = time.perf_counter() - t_fit
    # The folds start from the parent's head: the new head has seen every correction, so starting from it
    # leaked the held-out folds (measured: held-out NLL 4e-7, every correction right at confidence ~1).
    start = (*parent_head, c_value)
    trust = refreshed_trust(parent_file.trust, start, x_train, y_train, x_new, y_new, tex_new, cfg.weight, sols_new)
    version = f"refit-{time.strftime('%Y%m%d-%H%M%S')}-{len(chosen)}"
    out_dir = Path(cfg.out) / "refit" / version
    inputs = {
        "parent": parent.version,
        "corrections": len(chosen),
        "training_images": len(y_train),
        "weight": cfg.weight,
        "C": c_value,
        "new_classes": [c for c in classes if c not in parent_file.class_names],
        "source": "labels CSV " + cfg.labels if cfg.labels else "archive corrections",
    }
    meta_update = {
        "class_names": classes,
        "config": {**(parent_file.meta.get("config") or {}), "refit": inputs},
        "metrics": {**(parent_file.meta.get("metrics") or {}), "C": c_value},
    }
    files = write_version(parent_file, out_dir, meta_update, Head(w, b), trust)
    with make.begin() as s:
        mv = register(
            s,
            files["onnx"],
            version=version,
            parent=s.get(ModelVersion, parent.id),
            corrections=len(chosen),
            info={"inputs": inputs, "files": files, "corrections": [[c[0], c[1]] for c in chosen]},
        )
    result = RefitResult(version, files, inputs, round(fit_seconds, 2))
    if cfg.activate:
        result.activation = activate(make, mv)
    result.seconds = round(time.perf_counter() - t0, 2)
    with atomic_write(out_dir / "config.json") as f:
        json.dump(asdict(cfg), f, indent=2)
    with atomic_write(out_dir / "results.json") as f:
        json.dump(asdict(result), f, indent=2)
    engine.dispose()
    return result

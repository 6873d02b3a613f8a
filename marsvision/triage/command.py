"""`marsvision triage PATH...`: plan a sol's downlink from image files, within a flight-like envelope.

``TriageConfig`` is the command's options (field help → ``--help``); ``run_triage(paths, cfg)`` does the
work: classify the images (one thread by default), rank them (``plan.plan_downlink``), write the plan,
and only then add what it sends to the state folder. A kill before the state is replaced leaves the old
state whole (``state.save_state``); a rerun of the same inputs with the same state gives the same plan.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..data.msl import MSLDataset
from ..errors import MarsvisionError
from ..inference.classifier import expand_sources
from ..inference.predict import limit_cpus, load_model
from .plan import Budget, Plan, PlanParams, PlanRow, plan_downlink
from .priorities import load_priorities
from .state import Earth, load_state, save_state

COLUMNS = ("rank", "path", "send", "reason", "label", "confidence", "novelty", "bytes", "cumulative_bytes", "error")


@dataclass
class TriageConfig:
    """Plan a downlink: rank images (files, folders) so that the new and the varied are sent first, within a budget."""

    budget_fraction: float = field(default=0.0, metadata={"help": "send this share of the readable images (0 < F ≤ 1)"})
    budget_count: int = field(default=0, metadata={"help": "send at most N images"})
    budget_bytes: int = field(default=0, metadata={"help": "send at most B bytes of image files"})
    state: str = field(
        default="",
        metadata={
            "help": "folder remembering what earlier plans sent; it is judged against, and this plan's sent "
            "images are added once the plan is written (default: no memory)"
        },
    )
    priorities: str = field(
        default="", metadata={"help": 'TOML file of class weights, e.g. [weights] "drill holes" = 3 (default: all 1)'}
    )
    output: str = field(
        default="", metadata={"help": "write the plan to this .csv or .json file (default: CSV on stdout)"}
    )
    seed_data: str = field(
        default="",
        metadata={
            "help": "a new --state starts from the images of this MSL data set folder that Earth has (their "
            "features and labels), so that variety and rare classes are judged against them (default: the "
            "state starts empty, and only the model's novelty and confidence speak for the training images)"
        },
    )
    seed_splits: str = field(default="train,val", metadata={"help": "the --seed-data splits Earth has"})
    model: str = field(default="", metadata={"help": "model file (default: the bundled int8 model)"})
    threads: int = field(default=1, metadata={"help": "CPU cores and model threads (1: the flight-like envelope)"})


def sizes_of(files: list) -> list[int | None]:
    out = []
    for f in files:
        try:
            out.append(os.stat(f).st_size)
        except (OSError, TypeError):
            out.append(None)
    return out


def write_plan(rows: list[PlanRow], output: str | None) -> None:
    """CSV or JSON to ``output`` (atomically), or CSV on stdout."""
    dicts = [r.to_dict() for r in rows]
    suffix = Path(output).suffix.lower() if output else ".csv"
    if suffix not in (".csv", ".json"):
        raise MarsvisionError(f"--output {output}: write a .csv or .json file")
    if suffix == ".json":
        text = json.dumps(dicts, indent=1, ensure_ascii=False) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        text = buf.getvalue()
    if output:
        with atomic_write(output, encoding="utf-8", newline="") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def seed_earth(model, data: str, splits: str) -> Earth:
    """Earth holding a data set's images: one predict pass (about 15 ms an image on one core)."""
    ds = MSLDataset(data)
    split = ds.splits([s.strip() for s in splits.split(",") if s.strip()])
    features = []
    for p in model.predict_iter(split.paths):  # only the features kept: 7 kB an image
        if not p.ok:
            raise MarsvisionError(f"--seed-data: {p.source}: {p.error}")
        features.append(p.features)
    features = np.stack(features)
    labels = [ds.class_names[int(c)] for c in split.labels]
    return Earth.seeded(features, [Path(p).name for p in split.paths], labels)


def run_triage(paths: list[str], cfg: TriageConfig, params: PlanParams | None = None) -> Plan:
    """Classify, plan, write the plan, then the state. Bad options, a bad priorities file or a state of
    another model's features stop it before any image is read (``MarsvisionError``)."""
    budget = Budget(cfg.budget_fraction, cfg.budget_count, cfg.budget_bytes)
    if cfg.output and Path(cfg.output).suffix.lower() not in (".csv", ".json"):
        raise MarsvisionError(f"--output {cfg.output}: write a .csv or .json file")
    earth = load_state(cfg.state) if cfg.state else None
    files = list(expand_sources(paths))
    with limit_cpus(cfg.threads):
        model = load_model(cfg.model or None, threads=cfg.threads or None)
        weights = load_priorities(cfg.priorities, model.class_names) if cfg.priorities else None
        predictions = model.predict(files)
        if cfg.seed_data and cfg.state and earth is not None and not len(earth):
            earth = seed_earth(model, cfg.seed_data, cfg.seed_splits)
    dims = next((len(p.features) for p in predictions if p.ok and p.features is not None), None)
    if earth is not None and dims is not None:
        earth.check(dims)
    plan = plan_downlink(predictions, sizes_of(files), budget, earth, weights, params or PlanParams())
    write_plan(plan.rows, cfg.output or None)
    if cfg.state and plan.sent:
        base = earth if earth is not None else Earth.empty()
        sent = [plan.features[i] for i in plan.sent]
        sent_bytes = sum(r.bytes or 0 for r in plan.rows if r.send)
        note = {"inputs": len(files), "sent": len(plan.sent), "bytes": sent_bytes}
        labels = [predictions[i].label for i in plan.sent]
        save_state(cfg.state, base.with_sent(sent, [str(files[i]) for i in plan.sent], labels, plan.center, note))
    return plan


def summary(plan: Plan, cfg: TriageConfig) -> str:
    """One line for people: how many sent, how many bytes, how many unreadable."""
    sent = [r for r in plan.rows if r.send]
    bad = sum(r.error is not None for r in plan.rows)
    return (
        f"{len(sent)} of {len(plan.rows)} images to send ({sum(r.bytes or 0 for r in sent)} bytes)"
        + (f", {bad} unreadable" if bad else "")
        + (f"; plan in {cfg.output}" if cfg.output else "")
        + (f"; state in {cfg.state}" if cfg.state else "")
    )


def cmd_triage(paths: list[str], cfg: TriageConfig) -> int:
    """The CLI adapter: exit 0 when every input was read, 1 when some were not (each named on stderr)."""
    plan = run_triage(paths, cfg)
    for r in plan.rows:
        if r.error:
            print(f"marsvision: {r.path}: {r.error}", file=sys.stderr)
    print(f"marsvision: {summary(plan, cfg)}", file=sys.stderr)
    return 1 if any(r.error for r in plan.rows) else 0

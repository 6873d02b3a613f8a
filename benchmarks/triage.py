"""Triage benchmark: replay the mission's downlink, sol by sol (placeholder; filled in below)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from marsvision.data.msl import MSLDataset  # noqa: E402
from marsvision.inference.predict import load_model  # noqa: E402

CACHE = REPO / "runs" / "triage-embeddings.npz"


def build_cache(data: str, model: str, path: Path = CACHE) -> Path:
    """One predict pass over train, val and test: every array a Prediction carries, the label and the file size."""
    ds = MSLDataset(data or None)
    clf = load_model(model or None)
    names = clf.class_names
    out: dict[str, list] = {}
    for split in ("train", "val", "test"):
        sp = ds.split(split)
        t0 = time.perf_counter()
        for p, path_, c in zip(clf.predict_iter(sp.paths, batch_size=16), sp.paths, sp.labels, strict=True):
            if not p.ok:
                sys.exit(f"{p.source}: {p.error}")
            row = {
                "name": path_.name,
                "split": split,
                "y": names.index(ds.class_names[int(c)]),
                "bytes": path_.stat().st_size,
                "features": p.features.astype(np.float32),
                "texture": p.texture.astype(np.float32),
                "probabilities": p.probabilities.astype(np.float32),
                "novelty": np.nan if p.novelty is None else p.novelty,
            }
            for k, v in row.items():
                out.setdefault(k, []).append(v)
        print(f"{split}: {len(sp)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in out.items()}, class_names=np.asarray(names))
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="")
    ap.add_argument("--model", default="")
    a = ap.parse_args()
    build_cache(a.data, a.model)

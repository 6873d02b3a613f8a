"""What the benchmarks (and the experiments) share: where results go, how they are written, the
out-of-distribution set, AUROC, and the throwaway PostgreSQL server of the tests.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this module is found beside them; the
package is imported as installed (``pip install -e .``), never through a path edit.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from marsvision.atomic import atomic_write

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EXPERIMENT_RESULTS = REPO / "experiments" / "results"
OOD = REPO / "benchmarks" / "ood"  # the out-of-distribution set: images/ and provenance.csv
DEFAULT_DATA = REPO.parent / "shared" / "data" / "msl-images"  # beside the checkout, as the tests look for it


def write_results(name: str, data: dict, markdown: str, show: int | None = None, folder: Path = RESULTS) -> None:
    """Write FOLDER/NAME.json and NAME.md atomically (a kill keeps the old files), print the table.

    ``folder``: benchmarks/results (product benchmarks) or experiments/results. ``show`` prints only
    that many lines of a long table.
    """
    with atomic_write(folder / f"{name}.json") as f:
        json.dump(data, f, indent=2)
    markdown = markdown.rstrip("\n") + "\n"
    with atomic_write(folder / f"{name}.md") as f:
        f.write(markdown)
    print("\n".join(markdown.splitlines()[:show]))


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (scikit-learn's ROC AUC)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    return float(roc_auc_score(y, np.r_[negatives, positives]))


def postgres_helpers():
    """tests/servers.py (``throwaway_postgres``, ``PostgresUnavailable``), loaded from its file: the
    benchmarks start the same throwaway PostgreSQL server as the tests."""
    spec = importlib.util.spec_from_file_location("servers", REPO / "tests" / "servers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

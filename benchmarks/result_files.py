"""Where benchmarks and experiments keep what they measured: NAME.json for programs, NAME.md for people."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from marsvision.atomic import atomic_write  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
EXPERIMENT_RESULTS = REPO / "experiments" / "results"


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

"""The example images: chosen by examples/README.md's rule (examples/choose.py), and the bundled model says
of each what the table there says, right or wrong, flagged or not; the README's first command runs."""

import os
import subprocess
import sys
from pathlib import Path

from marsvision.cli import main
from marsvision.inference.predict import load_model

README = Path(__file__).resolve().parents[1] / "examples" / "README.md"


def example_table() -> dict[str, dict]:
    """examples/README.md's table (written by examples/choose.py): image → what the model said of it."""
    text = README.read_text().split("<!-- table: python examples/choose.py -->")[1].split("<!-- end of table -->")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| 0")]
    return {r[0]: {"truth": r[1], "label": r[2], "confidence": float(r[3]), "unknown": r[4] == "yes"} for r in rows}


def test_bundled_model_says_of_the_example_images_what_their_table_says(example_images):
    model = load_model()
    assert len(model.class_names) == 24 and "sun" not in model.class_names
    table = example_table()
    preds = model.predict(example_images[0].parent)  # a folder, as the CLI takes it
    assert len(table) == 12 and sorted(Path(p.source).name for p in preds) == sorted(table)
    for p in preds:
        row = table[Path(p.source).name]
        assert (p.label, bool(p.unknown)) == (row["label"], row["unknown"])
        assert abs(p.confidence - row["confidence"]) < 2e-3


def test_example_images_are_the_ones_the_rule_chooses(real_data):
    """examples/choose.py --check: the images are the rule's (byte for byte) and the table is current."""
    done = subprocess.run(
        [sys.executable, str(README.parent / "choose.py"), "--data", str(real_data), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(README.parents[1])},
    )
    assert done.returncode == 0, done.stderr


def test_quick_start_command(example_images, capsys):
    """The README's first command: `marsvision predict examples/images`, CSV when not on a terminal."""
    table = example_table()
    assert main(["predict", str(example_images[0].parent)]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == "path,label,confidence,unknown,novelty,error" and len(lines) == 1 + len(table)
    for line in lines[1:]:
        path, label, _, unknown = line.split(",")[:4]
        assert (label, unknown == "1") == (table[Path(path).name]["label"], table[Path(path).name]["unknown"])
    assert "12 classified, 0 failed" in out.err

"""The example images, chosen by a rule that never looks at the model, and what the model says of each.

    python examples/choose.py --data ../shared/data/msl-images           # copy the images, rewrite the table
    python examples/choose.py --data ../shared/data/msl-images --check   # exit 1 if either differs

Rule: the 12 classes with the most images in the official test split (ties by class name); of each, the
test image whose file name comes first (file names start with the sol, so the earliest). The images are
copied byte for byte into examples/images/. The table in examples/README.md (between its markers) is
then what the bundled model says of each, right or wrong, flagged or not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

import marsvision
from marsvision.data.msl import MSLDataset

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
README = HERE / "README.md"
CLASSES = 12
BEGIN, END = "<!-- table: python examples/choose.py -->", "<!-- end of table -->"


def chosen(ds: MSLDataset) -> dict[Path, str]:
    """{test image: its true class} by the rule above."""
    test = ds.split("test")
    names = [ds.class_names[int(c)] for c in test.labels]
    counts = Counter(names)
    classes = sorted(counts, key=lambda c: (-counts[c], c))[:CLASSES]
    return {min(p for p, n in zip(test.paths, names, strict=True) if n == c): c for c in classes}


def table(truth: dict[str, str]) -> str:
    """What the bundled model says of the images in examples/images (``truth``: file name → class)."""
    rows = [
        "| image | true class | model's label | confidence | unknown | novelty | right |",
        "|---|---|---|---:|---|---:|---|",
    ]
    preds = marsvision.load_model().predict(sorted(IMAGES.glob("*.JPG")))
    right = sum(p.label == truth[Path(p.source).name] for p in preds)
    for p in preds:
        name = Path(p.source).name
        rows.append(
            f"| {name} | {truth[name]} | {p.label} | {p.confidence:.3f} | {'yes' if p.unknown else 'no'} | "
            f"{p.novelty:.2f} | {'yes' if p.label == truth[name] else '**no**'} |"
        )
    flagged = sum(bool(p.unknown) for p in preds)
    return "\n".join([*rows, "", f"{right} of {len(preds)} labelled right; {flagged} flagged unknown."])


def with_table(text: str, body: str) -> str:
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{rest.split(END, 1)[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="MSL data set folder (default: the package's lookup)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if images or table differ")
    args = ap.parse_args(argv)
    picked = chosen(MSLDataset(args.data))
    want = {p.name: p for p in picked}
    have = {p.name: p for p in IMAGES.glob("*.JPG")}
    same = want.keys() == have.keys() and all(want[n].read_bytes() == have[n].read_bytes() for n in want)
    if args.check and not same:
        print(f"examples/images differ from the rule's choice: {sorted(want)}", file=sys.stderr)
        return 1
    if not same:
        for p in have.values():
            p.unlink()
        for p in picked:
            shutil.copyfile(p, IMAGES / p.name)
    text = README.read_text()
    new = with_table(text, table({p.name: c for p, c in picked.items()}))
    if args.check:
        if new != text:
            print("the table in examples/README.md differs from what the model says now", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    print(new.split(BEGIN, 1)[1].split(END, 1)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

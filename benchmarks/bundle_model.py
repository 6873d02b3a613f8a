"""Copy a trained model file into the package as the bundled model, weights stored in fp16.

    python benchmarks/bundle_model.py runs/lite0-trainval/best.pt

fp16 storage halves the file (the loader casts back to fp32); the bundled file's own metrics are
measured by `python benchmarks/compare_models.py --bundled`, so the rounding is accounted for.
"""

import argparse
from pathlib import Path

from marsvision.model_file import ModelFileError, bundled_source_path
from marsvision.nets.checkpoint import build_model, read_model_file, save_model


def main(src: str, dst: str | None = None) -> None:
    ckpt = read_model_file(src)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["config"] = {**meta.get("config", {}), "source_file": str(src)}
    out = Path(dst) if dst else bundled_source_path()
    save_model(out, build_model(ckpt), meta, half=True)
    print(f"{src} → {out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="trained model file, e.g. runs/probe-lite0ml-trainval-192/best.pt")
    ap.add_argument("dst", nargs="?", help="where to write it (default: the package's bundled model file)")
    args = ap.parse_args()
    try:
        main(args.src, args.dst)
    except ModelFileError as e:
        raise SystemExit(f"bundle_model: {e}") from None

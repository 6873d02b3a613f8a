"""The `marsvision` command line: one typed function per command, a thin adapter over the library.

Each command's options are generated from its dataclass config; the field help becomes `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_ERROR = 0, 1, 2


@dataclass
class PredictConfig:
    """Classify image files and folders (recursively); one output row per input."""

    model: str = field(default="", metadata={"help": "model file (default: the bundled model)"})
    output: str = field(default="", metadata={"help": "write results to this .csv or .json file (default: CSV on stdout)"})
    top_k: int = field(default=1, metadata={"help": "also report the K most likely classes"})
    batch_size: int = field(default=32, metadata={"help": "images per forward pass"})
    threads: int = field(default=0, metadata={"help": "CPU threads for decoding and the model (0: all)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})


@dataclass
class DownloadConfig:
    """Download the MSL data set from Zenodo (DOI 10.5281/zenodo.1049137) and verify it."""

    dest: str = field(default="data", metadata={"help": "folder to put msl-images/ in"})
    url: str = field(default="", metadata={"help": "archive URL (default: the Zenodo record)"})


@dataclass
class VerifyConfig:
    """Check a data set copy file by file against the shipped SHA-256 manifest."""

    data: str = field(default="", metadata={"help": "data set folder (default: $MARSVISION_DATA, then ./data/msl-images)"})
    quick: bool = field(default=False, metadata={"help": "compare sizes only, skip hashing"})


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One `--option` per dataclass field; bools become --flag / --no-flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        opt = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "") + f" (default: {f.default!r})"
        if typ is bool:
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            parser.add_argument(opt, dest=f.name, type=typ, default=f.default, help=help_)


def config_from(args: argparse.Namespace, cls):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def cmd_train(cfg, resume: str = "") -> int:
    from .train import train

    run_dir = train(cfg, resume=resume or None)
    print(f"run folder: {run_dir}  (best model: {run_dir / 'best.pt'})")
    return EXIT_OK


def cmd_probe(cfg) -> int:
    from .probe import train_probe

    path = train_probe(cfg)
    print(f"model written to {path}")
    return EXIT_OK


def cmd_evaluate(cfg) -> int:
    from .evaluate import run_evaluate

    run_evaluate(cfg)
    return EXIT_OK


def cmd_predict(paths: list[str], cfg: PredictConfig) -> int:
    """Exit 0 when every input got a label, 1 when some failed (each named on stderr and in its row)."""
    import csv

    from tqdm import tqdm

    from .atomic import atomic_write
    from .predict import Prediction, expand_inputs, load_model

    files, missing = expand_inputs(paths)
    clf = load_model(cfg.model or None, device=cfg.device, threads=cfg.threads or None)
    preds = [Prediction(p, error=why) for p, why in missing]
    preds += list(tqdm(clf.predict_iter(files, batch_size=cfg.batch_size, top_k=cfg.top_k),
                       total=len(files), desc="predict", unit="img", disable=not sys.stderr.isatty()))
    for p in preds:
        if not p.ok:
            print(f"marsvision: {p.source}: {p.error}", file=sys.stderr)
    rows = []
    for p in preds:
        row = {"path": p.source, "label": p.label or "", "confidence": "" if p.confidence is None else round(p.confidence, 5)}
        if cfg.top_k > 1:
            for i in range(cfg.top_k):
                name, prob = p.top_k[i] if i < len(p.top_k) else ("", "")
                row[f"top{i + 1}_label"], row[f"top{i + 1}_confidence"] = name, prob if prob == "" else round(prob, 5)
        row["error"] = p.error or ""
        rows.append(row)
    if cfg.output.endswith(".json"):
        with atomic_write(cfg.output) as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)
    else:
        fields = list(rows[0]) if rows else ["path", "label", "confidence", "error"]
        if cfg.output:
            with atomic_write(cfg.output, newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=fields).writeheader()
                csv.DictWriter(f, fieldnames=fields).writerows(rows)
        else:
            w = csv.DictWriter(sys.stdout, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    failed = sum(not p.ok for p in preds)
    print(f"marsvision: {len(preds) - failed} classified, {failed} failed"
          + (f"; results in {cfg.output}" if cfg.output else ""), file=sys.stderr)
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def cmd_download(cfg: DownloadConfig) -> int:
    from .download import ZENODO_URL, download

    root = download(cfg.dest, url=cfg.url or ZENODO_URL)
    print(f"data set ready at {root}; use --data {root} or export MARSVISION_DATA={root}")
    return EXIT_OK


def cmd_verify(cfg: VerifyConfig) -> int:
    from .data import resolve_data_dir
    from .download import verify

    report = verify(resolve_data_dir(cfg.data or None), check_hashes=not cfg.quick)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED_INPUTS


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import EvaluateConfig
    from .probe import ProbeConfig
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="marsvision", description="Classify Curiosity rover (MSL) images.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help=TrainConfig.__doc__, description=TrainConfig.__doc__)
    add_config_args(p, TrainConfig)
    p.add_argument("--resume", default="", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    p.set_defaults(run=lambda a: cmd_train(config_from(a, TrainConfig), a.resume))

    p = sub.add_parser("probe", help=ProbeConfig.__doc__, description=ProbeConfig.__doc__)
    add_config_args(p, ProbeConfig)
    p.set_defaults(run=lambda a: cmd_probe(config_from(a, ProbeConfig)))

    p = sub.add_parser("evaluate", help=EvaluateConfig.__doc__, description=EvaluateConfig.__doc__)
    add_config_args(p, EvaluateConfig)
    p.set_defaults(run=lambda a: cmd_evaluate(config_from(a, EvaluateConfig)))

    p = sub.add_parser("predict", help=PredictConfig.__doc__, description=PredictConfig.__doc__)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    add_config_args(p, PredictConfig)
    p.set_defaults(run=lambda a: cmd_predict(a.paths, config_from(a, PredictConfig)))

    data = sub.add_parser("data", help="download or verify the MSL data set").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("download", help=DownloadConfig.__doc__, description=DownloadConfig.__doc__)
    add_config_args(p, DownloadConfig)
    p.set_defaults(run=lambda a: cmd_download(config_from(a, DownloadConfig)))
    p = data.add_parser("verify", help=VerifyConfig.__doc__, description=VerifyConfig.__doc__)
    add_config_args(p, VerifyConfig)
    p.set_defaults(run=lambda a: cmd_verify(config_from(a, VerifyConfig)))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import ModelFileError
    from .data import DataError
    from .download import DownloadError

    try:
        return args.run(args)
    except (DataError, ModelFileError, DownloadError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"marsvision: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("marsvision: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

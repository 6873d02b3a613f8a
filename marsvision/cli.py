"""The `marsvision` command line: one typed function per command, a thin adapter over the library.

Each command's options are generated from its dataclass config; the field help becomes `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .data.msl import DATA_HELP

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_ERROR = 0, 1, 2


@dataclass
class PredictConfig:
    """Classify image files and folders (recursively); one output row per input."""

    model: str = field(
        default="",
        metadata={
            "help": "model file: .onnx (fp32 or int8) or a torch .pt checkpoint (default: the bundled int8 model)"
        },
    )
    output: str = field(
        default="",
        metadata={
            "help": (
                "write results to this .csv, .json or .parquet file (Parquet: with "
                "sha256, top-k and features; needs pip install 'marsvision[parquet]') "
                "(default: a table on a terminal, CSV when piped)"
            )
        },
    )
    top_k: int = field(default=1, metadata={"help": "also report the K most likely classes"})
    min_confidence: float = field(
        default=0.0,
        metadata={
            "help": (
                "leave the label empty (column 'withheld' says why) when the calibrated "
                "confidence is below this or the image is flagged unknown (0: always "
                "label)"
            )
        },
    )
    batch_size: int = field(
        default=0, metadata={"help": "images per forward pass (0: the runtime's default, 4 for ONNX, 32 for torch)"}
    )
    threads: int = field(
        default=0,
        metadata={
            "help": (
                "CPU budget: pin the process to N cores and use N model and N decoding threads (0: all cores, unpinned)"
            )
        },
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    engine: str = field(
        default="local",
        metadata={
            "help": (
                "local: this process; ray: a Ray cluster, writes --output FILE.parquet, "
                "resumable (needs pip install 'marsvision[ray]'; --threads and "
                "--batch-size then apply per actor; docs/scaling.md)"
            )
        },
    )
    ray_address: str = field(
        default="",
        metadata={
            "help": "Ray cluster for --engine ray, e.g. auto or ray://head:10001 (default: start a local Ray instance)"
        },
    )


@dataclass
class ExplainConfig:
    """Write, per image, a heatmap of where the evidence for its predicted class (and any --classes) lies."""

    output: str = field(metadata={"help": "folder for <image>.<class>.png overlays and explanations.json"})
    classes: str = field(
        default="", metadata={"help": "comma-separated classes to explain too (default: only the predicted one)"}
    )
    model: str = field(default="", metadata={"help": "model file (default: the bundled int8 model)"})
    top_k: int = field(default=3, metadata={"help": "most likely classes listed per image"})
    size: int = field(default=384, metadata={"help": "longer side of the overlay images in pixels"})


@dataclass
class DownloadConfig:
    """Download the MSL data set from Zenodo (DOI 10.5281/zenodo.1049137) and verify it."""

    dest: str = field(default="data", metadata={"help": "folder to put msl-images/ in"})
    url: str = field(default="", metadata={"help": "archive URL (default: the Zenodo record)"})


@dataclass
class VerifyConfig:
    """Check a data set copy file by file against the shipped SHA-256 manifest."""

    data: str = field(default="", metadata={"help": DATA_HELP})
    quick: bool = field(default=False, metadata={"help": "compare sizes only, skip hashing"})


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One `--option` per dataclass field; bools become --flag / --no-flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        opt = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if f.default is dataclasses.MISSING:
            parser.add_argument(opt, dest=f.name, type=typ, required=True, help=help_)
            continue
        if "(default" not in help_:  # some helps explain an empty default themselves
            help_ += f" (default: {f.default!r})"
        if typ is bool:
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            parser.add_argument(opt, dest=f.name, type=typ, default=f.default, help=help_)


def config_from(args: argparse.Namespace, cls):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def cmd_train(cfg, resume: str = "") -> int:
    from .training.train import train

    run_dir = train(cfg, resume=resume or None)
    print(f"run folder: {run_dir}  (best model: {run_dir / 'best.pt'})")
    return EXIT_OK


def cmd_probe(cfg) -> int:
    from .training.probe import train_probe

    path = train_probe(cfg)
    print(f"model written to {path}")
    return EXIT_OK


def cmd_evaluate(cfg) -> int:
    from .evaluation.evaluate import run_evaluate

    run_evaluate(cfg)
    return EXIT_OK


def cmd_export(cfg) -> int:
    from .export.onnx import run_export

    run_export(cfg)
    return EXIT_OK


def cmd_calibrate(cfg) -> int:
    from .export.trust import run_calibrate

    run_calibrate(cfg)
    return EXIT_OK


def cmd_predict(paths: list[str], cfg: PredictConfig) -> int:
    """Exit 0 when every input got a label, 1 when some failed (each named on stderr and in its row)."""
    from tqdm import tqdm

    from .inference.classifier import expand_sources
    from .inference.predict import format_predictions, limit_cpus, load_model, write_predictions
    from .scale import predict_engine  # checks --engine and a .parquet output's extra before any work

    if predict_engine(cfg) == "ray":
        from .scale.ray_engine import cmd_predict as cmd_predict_ray

        return cmd_predict_ray(paths, cfg)
    files = list(expand_sources(paths))
    with limit_cpus(cfg.threads):
        clf = load_model(cfg.model or None, device=cfg.device, threads=cfg.threads or None)
        preds = list(
            tqdm(
                clf.predict_iter(files, batch_size=cfg.batch_size or None, top_k=cfg.top_k),
                total=len(files),
                desc="predict",
                unit="img",
                disable=not sys.stderr.isatty(),
            )
        )
    for p in preds:
        if not p.ok:
            print(f"marsvision: {p.source}: {p.error}", file=sys.stderr)
        elif cfg.min_confidence > 0:
            p.withhold_below(cfg.min_confidence)
    if cfg.output or not sys.stdout.isatty():
        write_predictions(preds, cfg.output or None, top_k=cfg.top_k, withheld=cfg.min_confidence > 0)
    else:  # a person at a terminal: a table; piped or --output: CSV
        print(format_predictions(preds))
    failed = sum(not p.ok for p in preds)
    withheld = sum(p.withheld is not None for p in preds)
    unknown = sum(bool(p.unknown) for p in preds)
    print(
        f"marsvision: {len(preds) - failed} classified, {failed} failed"
        + (f", {unknown} flagged unknown" if unknown else "")
        + (f", {withheld} left unlabelled (confidence below {cfg.min_confidence:g} or unknown)" if withheld else "")
        + (f"; results in {cfg.output}" if cfg.output else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def cmd_explain(paths: list[str], cfg: ExplainConfig) -> int:
    """Exit 0 when every image was explained, 1 when some could not be read (each named on stderr)."""
    import json

    from .atomic import atomic_write
    from .inference.classifier import expand_sources
    from .inference.explain import explain, write_explanations
    from .inference.predict import load_model

    files = list(expand_sources(paths))
    clf = load_model(cfg.model or None)
    classes = [c.strip() for c in cfg.classes.split(",") if c.strip()]
    rows = write_explanations(explain(clf, files, classes, cfg.top_k), files, cfg.output, cfg.size)
    with atomic_write(Path(cfg.output) / "explanations.json", encoding="utf-8") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)
    for r in rows:
        if r["error"]:
            print(f"marsvision: {r['path']}: {r['error']}", file=sys.stderr)
        else:
            top = ", ".join(
                f"{r[f'top{i}_label']} {r[f'top{i}_confidence']:.3f}"
                for i in range(1, cfg.top_k + 1)
                if r.get(f"top{i}_label")
            )
            print(f"{r['path']}: {top}" + ("  [unknown image]" if r["unknown"] else ""))
    failed = sum(bool(r["error"]) for r in rows)
    print(f"marsvision: {len(rows) - failed} explained, {failed} failed; heatmaps in {cfg.output}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _archive_module(name: str):
    """An archive module; a missing ``[archive]`` extra is a one-line error with the install command."""
    try:
        return importlib.import_module(f"marsvision.archive.{name}")
    except ImportError as e:
        if (e.name or "").startswith("marsvision"):
            raise
        raise MissingExtraError(f"the archive needs {e.name}: pip install 'marsvision[archive]'") from None


def cmd_index(paths: list[str], cfg) -> int:
    """Exit 0 when every file was read, 1 when some could not be (each named on stderr, and stored)."""
    report = _archive_module("index").run_index(paths, cfg)
    for path, why in report.failed:
        print(f"marsvision: {path}: {why}", file=sys.stderr)
    print(f"marsvision: {report.summary()}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if report.failed else EXIT_OK


def cmd_models(action: str, version: str, db: str) -> int:
    """`marsvision models list|activate VERSION|rollback`."""
    db_mod, versions, rescore = (_archive_module(m) for m in ("db", "versions", "rescore"))
    engine = db_mod.open_engine(db or None)
    make = db_mod.sessions(engine)
    if action == "list":
        with make() as s:
            rows = versions.version_rows(s)
        for r in rows:
            print(
                f"{'*' if r['active'] else ' '} {r['version']:<36} {r['created_at']}  parent {r['parent'] or '-':<36} "
                f"{r['corrections']:>5} corrections {r['images']:>7} images"
            )
        return EXIT_OK
    with make() as s:
        target = versions.rollback_target(s) if action == "rollback" else versions.find(s, version)
    done = rescore.activate(make, target)
    print(f"marsvision: {done['version']} is active; {done['rescored']} images re-scored in {done['seconds']:.1f} s")
    return EXIT_OK


def cmd_refit(cfg) -> int:
    result = importlib.import_module("marsvision.curate.refit").run_refit(cfg)
    act = result.get("activation")
    print(
        f"marsvision: {result['version']} from {result['inputs']['corrections']} corrections and "
        f"{result['inputs']['training_images']} training images (head fitted in {result['fit_seconds']:.1f} s) → "
        f"{result['files']['onnx']}"
        + (f" and {result['files']['torch']}" if result["files"].get("torch") else "")
        + (f"; active, {act['rescored']} images re-scored in {act['seconds']:.1f} s" if act else "; not activated")
    )
    return EXIT_OK


def cmd_serve(cfg) -> int:
    _archive_module("server").run_serve(cfg)
    return EXIT_OK


def _download_module():
    try:
        return importlib.import_module("marsvision.data.download")
    except ImportError as e:
        if (e.name or "").startswith("marsvision"):
            raise
        raise MissingExtraError(f"`marsvision data` needs {e.name}: pip install 'marsvision[data]'") from None


def cmd_download(cfg: DownloadConfig) -> int:
    dl = _download_module()
    ZENODO_URL, download = dl.ZENODO_URL, dl.download

    root = download(cfg.dest, url=cfg.url or ZENODO_URL)
    print(f"data set ready at {root}; use --data {root} or export MARSVISION_DATA={root}")
    return EXIT_OK


def cmd_verify(cfg: VerifyConfig) -> int:
    from .data.msl import resolve_data_dir

    verify = _download_module().verify

    report = verify(resolve_data_dir(cfg.data or None), check_hashes=not cfg.quick)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED_INPUTS


# Commands whose options come from a config dataclass in another module: (module, class, needs).
# Only the invoked command's module is imported, so `marsvision predict` with an ONNX model never
# imports torch (the train/probe/export modules do).
LAZY_COMMANDS = {
    "train": ("marsvision.training.train", "TrainConfig", "train"),
    "probe": ("marsvision.training.probe", "ProbeConfig", "train"),
    "evaluate": ("marsvision.evaluation.evaluate", "EvaluateConfig", ""),
    "export": ("marsvision.export.onnx", "ExportConfig", "train"),
    "calibrate": ("marsvision.export.trust", "CalibrateConfig", "train"),
    "refit": ("marsvision.curate.refit", "RefitConfig", "archive"),
}
SHORT_HELP = {
    "train": "Fine-tune a model on the MSL data set.",
    "probe": "Fit a balanced logistic regression on frozen ImageNet EfficientNet-Lite features.",
    "evaluate": "Evaluate a model on an official split: metrics table, metrics.json, predictions.csv, plots.",
    "export": "Export a model file to ONNX (fp32) and, with --int8, a statically quantised int8 ONNX model.",
    "calibrate": "Fit a model file's calibrated confidence and unknown-image data on its training splits.",
    "index": "Classify images (files, folders, recursively) into the archive database, one row per image.",
    "serve": "Serve the archive: a web page at / and a REST API at /api (OpenAPI page at /docs).",
    "refit": "Refit the model's head on its training images plus the curators' corrections (no image decoded).",
    "models": "List the archive's model versions, activate one (re-scoring the archive), or roll back.",
    "triage": "Plan a downlink: rank images so that the new and the varied are sent first, within a budget.",
}


class MissingExtraError(RuntimeError):
    """A command needs packages of an extra that is not installed."""


def _config_class(command: str):
    module, name, extra = LAZY_COMMANDS[command]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        if not extra or (e.name or "").startswith("marsvision"):
            raise
        raise MissingExtraError(
            f"`marsvision {command}` needs {e.name or 'more packages'}: pip install 'marsvision[{extra}]'"
        ) from None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser for the command named in ``argv`` (all commands listed, only that one built)."""
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="marsvision", description="Classify Curiosity rover (MSL) images.")
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {
        "train": lambda a, cls: cmd_train(config_from(a, cls), a.resume),
        "probe": lambda a, cls: cmd_probe(config_from(a, cls)),
        "evaluate": lambda a, cls: cmd_evaluate(config_from(a, cls)),
        "export": lambda a, cls: cmd_export(config_from(a, cls)),
        "calibrate": lambda a, cls: cmd_calibrate(config_from(a, cls)),
        "refit": lambda a, cls: cmd_refit(config_from(a, cls)),
    }
    for name in ("train", "probe", "evaluate", "export", "calibrate", "refit"):
        if name != wanted:
            sub.add_parser(name, help=SHORT_HELP[name], description=SHORT_HELP[name])
            continue
        cls = _config_class(name)
        p = sub.add_parser(name, help=cls.__doc__, description=cls.__doc__)
        add_config_args(p, cls)
        if name == "train":
            p.add_argument(
                "--resume", default="", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped"
            )
        p.set_defaults(run=lambda a, cls=cls, name=name: runners[name](a, cls))

    p = sub.add_parser("predict", help=PredictConfig.__doc__, description=PredictConfig.__doc__)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    add_config_args(p, PredictConfig)
    p.set_defaults(run=lambda a: cmd_predict(a.paths, config_from(a, PredictConfig)))

    for name, module, config, run in (
        ("index", "index", "IndexConfig", cmd_index),
        ("serve", "server", "ServeConfig", cmd_serve),
    ):
        if name != wanted:
            sub.add_parser(name, help=SHORT_HELP[name], description=SHORT_HELP[name])
            continue
        cls = getattr(_archive_module(module), config)
        p = sub.add_parser(name, help=cls.__doc__, description=cls.__doc__)
        if name == "index":
            p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
        add_config_args(p, cls)
        p.set_defaults(
            run=lambda a, cls=cls, run=run, name=name: (
                run(a.paths, config_from(a, cls)) if name == "index" else run(config_from(a, cls))
            )
        )

    if wanted == "triage":
        from .triage.command import TriageConfig, cmd_triage

        p = sub.add_parser("triage", help=TriageConfig.__doc__, description=TriageConfig.__doc__)
        p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
        add_config_args(p, TriageConfig)
        p.set_defaults(run=lambda a: cmd_triage(a.paths, config_from(a, TriageConfig)))
    else:
        sub.add_parser("triage", help=SHORT_HELP["triage"], description=SHORT_HELP["triage"])

    p = sub.add_parser("models", help=SHORT_HELP["models"], description=SHORT_HELP["models"])
    p.add_argument("action", choices=("list", "activate", "rollback"))
    p.add_argument("version", nargs="?", default="", help="the version to activate")
    p.add_argument("--db", default="", help="archive database (default: $MARSVISION_DB, then ./marsvision.db)")
    p.set_defaults(
        run=lambda a: (
            cmd_models(a.action, a.version, a.db)
            if a.action != "activate" or a.version
            else p.error("activate needs a VERSION (see `marsvision models list`)")
        )
    )

    p = sub.add_parser("explain", help=ExplainConfig.__doc__, description=ExplainConfig.__doc__)
    p.add_argument("paths", nargs="+", metavar="IMAGE", help="image files or folders")
    add_config_args(p, ExplainConfig)
    p.set_defaults(run=lambda a: cmd_explain(a.paths, config_from(a, ExplainConfig)))

    data = sub.add_parser("data", help="download or verify the MSL data set").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("download", help=DownloadConfig.__doc__, description=DownloadConfig.__doc__)
    add_config_args(p, DownloadConfig)
    p.set_defaults(run=lambda a: cmd_download(config_from(a, DownloadConfig)))
    p = data.add_parser("verify", help=VerifyConfig.__doc__, description=VerifyConfig.__doc__)
    add_config_args(p, VerifyConfig)
    p.set_defaults(run=lambda a: cmd_verify(config_from(a, VerifyConfig)))
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that end a command with a one-line message (exit 2) instead of a traceback."""
    from .data.msl import DataError
    from .errors import MarsvisionError
    from .model_file import ModelFileError
    from .preprocess import ImageError

    errors: list[type[BaseException]] = [
        DataError,
        MarsvisionError,
        ModelFileError,
        ImageError,
        MissingExtraError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ]
    if "marsvision.data.download" in sys.modules:  # imported only by the data commands (needs pooch)
        errors.append(sys.modules["marsvision.data.download"].DownloadError)
    if "marsvision.export.onnx" in sys.modules:
        errors.append(sys.modules["marsvision.export.onnx"].ExportCheckError)
    if "marsvision.archive.versions" in sys.modules:
        errors.append(sys.modules["marsvision.archive.versions"].VersionError)
    if "marsvision.scale" in sys.modules:  # a missing [ray] or [parquet] extra
        errors.append(sys.modules["marsvision.scale"].NeedsExtraError)
    if "sqlalchemy" in sys.modules:  # an unreachable or broken database: one line, not a traceback
        errors.append(sys.modules["sqlalchemy"].exc.OperationalError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt:
        print("marsvision: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, _expected_errors()):
            raise
        # One line: some libraries' messages (a database driver's) run over several.
        print(
            f"marsvision: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

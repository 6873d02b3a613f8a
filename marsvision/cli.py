"""The `marsvision` command line: a thin adapter over the library.

One table, ``COMMANDS``, names every command: the module and dataclass of its config, the function that
runs it and the extra it needs. Each command's parser is built from its config (the field help becomes
``--help``), and only the invoked command's module is imported, so `marsvision predict` with an ONNX
model never imports torch (the train/probe/export modules do).

Errors of the ``MarsvisionError`` family and ``OSError`` (a missing file, a full disk) end a command with
one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import MarsvisionError, UsageError, require

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_ERROR = 0, 1, 2


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


def cmd_predict(paths: list[str], cfg) -> int:
    """Exit 0 when every input got a label, 1 when some failed (each named on stderr and in its row)."""
    from tqdm import tqdm

    from .inference.classifier import expand_sources
    from .inference.predict import format_predictions, limit_cpus, load_model, write_predictions
    from .scale import predict_engine  # checks --engine and a .parquet output's extra before any work

    if predict_engine(cfg) == "ray":
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


def cmd_predict_ray(paths: list[str], cfg) -> int:
    """`predict --engine ray`: errors of this run's images on stderr, a summary line."""
    from .scale.ray_predict import run_predict

    report = run_predict(paths, cfg)
    for path, why in report.failed:
        print(f"marsvision: {path}: {why}", file=sys.stderr)
    print(f"marsvision: {report.summary(cfg.output)}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if report.failed else EXIT_OK


def cmd_explain(paths: list[str], cfg) -> int:
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


def cmd_index(paths: list[str], cfg) -> int:
    """Exit 0 when every file was read, 1 when some could not be (each named on stderr, and stored)."""
    from .archive.index import run_index
    from .scale import check_engine

    if check_engine(cfg.engine) == "ray":
        from .scale.ray_engine import ray_session
        from .scale.ray_index import RAY

        with ray_session(cfg.ray_address):  # one Ray instance for hashing and classifying
            report = run_index(paths, cfg, runner=RAY)
    else:
        report = run_index(paths, cfg)
    for path, why in report.failed:
        print(f"marsvision: {path}: {why}", file=sys.stderr)
    print(f"marsvision: {report.summary()}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if report.failed else EXIT_OK


def cmd_models(cfg) -> int:
    """`marsvision models list|activate VERSION|rollback`."""
    from .archive import db as db_mod
    from .archive import rescore, versions

    if cfg.action == "activate" and not cfg.version:
        raise UsageError("activate needs a VERSION (see `marsvision models list`)")
    engine = db_mod.open_engine(cfg.db or None)
    make = db_mod.sessions(engine)
    if cfg.action == "list":
        with make() as s:
            rows = versions.version_rows(s)
        for r in rows:
            print(
                f"{'*' if r['active'] else ' '} {r['version']:<36} {r['created_at']}  parent {r['parent'] or '-':<36} "
                f"{r['corrections']:>5} corrections {r['images']:>7} images"
            )
        return EXIT_OK
    with make() as s:
        target = versions.rollback_target(s) if cfg.action == "rollback" else versions.find(s, cfg.version)
    done = rescore.activate(make, target)
    print(f"marsvision: {done.version} is active; {done.rescored} images re-scored in {done.seconds:.1f} s")
    return EXIT_OK


def cmd_refit(cfg) -> int:
    from .curate.refit import run_refit

    result = run_refit(cfg)
    act, files = result.activation, result.files
    print(
        f"marsvision: {result.version} from {result.inputs['corrections']} corrections and "
        f"{result.inputs['training_images']} training images (head fitted in {result.fit_seconds:.1f} s) → "
        f"{files['onnx']}"
        + (f" and {files['torch']}" if files.get("torch") else "")
        + (f"; active, {act.rescored} images re-scored in {act.seconds:.1f} s" if act else "; not activated")
    )
    return EXIT_OK


def cmd_download(cfg) -> int:
    from .data.download import ZENODO_URL, download

    root = download(cfg.dest, url=cfg.url or ZENODO_URL)
    print(f"data set ready at {root}; use --data {root} or export MARSVISION_DATA={root}")
    return EXIT_OK


def cmd_verify(cfg) -> int:
    from .data.download import verify
    from .data.msl import resolve_data_dir

    report = verify(resolve_data_dir(cfg.data or None), check_hashes=not cfg.quick)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED_INPUTS


@dataclass(frozen=True)
class Command:
    """One subcommand: where its config lives and what runs it."""

    help: str  # listed by `marsvision --help` without importing the config's module; its docstring (tested)
    config: str  # "module:Class" of the config dataclass; ``run``, when a name, is a function of that module
    run: str | Callable  # a function of ``module`` by name, or one of this file; run(cfg) or run(paths, cfg)
    paths: str = ""  # metavar of the positional inputs (files or folders); "" for none
    extra: str = ""  # the extra ``module`` needs: a missing one is a one-line error naming the install
    options: str = ""  # a dataclass in the config's module of options outside the config, passed to ``run``
    # as keyword arguments (train's --resume: a run's config.json never holds it)


DATA = "marsvision.data.download"
COMMANDS: dict[str, Command] = {
    "train": Command(
        "Fine-tune a model on the MSL data set.",
        "marsvision.training.train:TrainConfig",
        cmd_train,
        extra="train",
        options="ResumeOption",
    ),
    "probe": Command(
        "Fit a balanced logistic regression on frozen ImageNet EfficientNet-Lite features.",
        "marsvision.training.probe:ProbeConfig",
        cmd_probe,
        extra="train",
    ),
    "evaluate": Command(
        "Evaluate a model on an official split: metrics table, metrics.json, predictions.csv, plots.",
        "marsvision.evaluation.evaluate:EvaluateConfig",
        "run_evaluate",
    ),
    "export": Command(
        "Export a model file to ONNX (fp32) and, with --int8, a statically quantised int8 ONNX model.",
        "marsvision.export.onnx:ExportConfig",
        "run_export",
        extra="train",
    ),
    "calibrate": Command(
        "Fit a model file's calibrated confidence and unknown-image data on its training splits.",
        "marsvision.export.trust:CalibrateConfig",
        "run_calibrate",
        extra="train",
    ),
    "refit": Command(
        "Refit the model's head on its training images plus the curators' corrections (no image decoded).",
        "marsvision.curate.refit:RefitConfig",
        cmd_refit,
        extra="archive",
    ),
    "predict": Command(
        "Classify image files and folders (recursively); one output row per input.",
        "marsvision.inference.predict:PredictConfig",
        cmd_predict,
        paths="PATH",
    ),
    "triage": Command(
        "Plan a downlink: rank images (files, folders) so that the new and the varied are sent first, within a budget.",
        "marsvision.triage.command:TriageConfig",
        "cmd_triage",
        paths="PATH",
    ),
    "index": Command(
        "Classify images (files, folders, recursively) into the archive database, one row per image.",
        "marsvision.archive.index:IndexConfig",
        cmd_index,
        paths="PATH",
        extra="archive",
    ),
    "serve": Command(
        "Serve the archive: a web page at / and a REST API at /api (OpenAPI page at /docs).",
        "marsvision.web.server:ServeConfig",
        "run_serve",
        extra="archive",
    ),
    "models": Command(
        "List the archive's model versions, activate one (re-scoring the archive), or roll back.",
        "marsvision.archive.versions:ModelsConfig",
        cmd_models,
        extra="archive",
    ),
    "explain": Command(
        "Write, per image, a heatmap of where the evidence for its predicted class (and any --classes) lies.",
        "marsvision.inference.explain:ExplainConfig",
        cmd_explain,
        paths="IMAGE",
    ),
    "data download": Command(
        "Download the MSL data set from Zenodo (DOI 10.5281/zenodo.1049137) and verify it.",
        f"{DATA}:DownloadConfig",
        cmd_download,
        extra="data",
    ),
    "data verify": Command(
        "Check a data set copy file by file against the shipped SHA-256 manifest.",
        f"{DATA}:VerifyConfig",
        cmd_verify,
        extra="data",
    ),
}


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """One `--option` per dataclass field (a positional argument where its metadata says so); bools
    become --flag / --no-flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ, meta = hints[f.name], f.metadata
        help_ = meta.get("help", "")
        if meta.get("positional"):
            nargs = None if f.default is dataclasses.MISSING else "?"
            default = None if f.default is dataclasses.MISSING else f.default
            parser.add_argument(f.name, nargs=nargs, default=default, choices=meta.get("choices"), help=help_ or None)
            continue
        opt = "--" + f.name.replace("_", "-")
        extra = {"metavar": meta["metavar"]} if "metavar" in meta else {}
        if f.default is dataclasses.MISSING:
            parser.add_argument(opt, dest=f.name, type=typ, required=True, help=help_, **extra)
            continue
        if "(default" not in help_:  # some helps explain an empty default themselves
            help_ += f" (default: {f.default!r})"
        if typ is bool:
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            parser.add_argument(opt, dest=f.name, type=typ, default=f.default, help=help_, **extra)


def config_from(args: argparse.Namespace, cls):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def load_command(name: str) -> tuple[type, Callable, type | None]:
    """The config class, run function and options class of command ``name``; a missing extra is a
    one-line error."""
    c = COMMANDS[name]
    path, _, config = c.config.partition(":")
    module = require(path, f"`marsvision {name}`", c.extra) if c.extra else importlib.import_module(path)
    run = getattr(module, c.run) if isinstance(c.run, str) else c.run
    return getattr(module, config), run, getattr(module, c.options) if c.options else None


def run_command(name: str, args: argparse.Namespace, cls: type, run: Callable, more: type | None) -> int:
    inputs = (args.paths,) if COMMANDS[name].paths else ()
    options = dataclasses.asdict(config_from(args, more)) if more else {}
    code = run(*inputs, config_from(args, cls), **options)
    return code if type(code) is int else EXIT_OK  # library functions return their results, not exit codes


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser for the command named in ``argv`` (all commands listed, only that one built)."""
    argv = sys.argv[1:] if argv is None else argv
    words = [a for a in argv if not a.startswith("-")]
    parser = argparse.ArgumentParser(prog="marsvision", description="Classify Curiosity rover (MSL) images.")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, c in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        where = sub
        if group:
            if group not in groups:
                groups[group] = sub.add_parser(group, help=f"download or verify the MSL {group} set").add_subparsers(
                    dest=f"{group}_command", required=True
                )
            where = groups[group]
        if words[: len(name.split())] != name.split():
            where.add_parser(leaf, help=c.help, description=c.help)
            continue
        cls, run, more = load_command(name)
        p = where.add_parser(leaf, help=c.help, description=cls.__doc__)
        if c.paths:
            p.add_argument("paths", nargs="+", metavar=c.paths, help="image files or folders")
        add_config_args(p, cls)
        if more:
            add_config_args(p, more)
        p.set_defaults(run=lambda a, name=name, cls=cls, run=run, more=more: run_command(name, a, cls, run, more))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt:
        print("marsvision: interrupted", file=sys.stderr)
        return 130
    except (MarsvisionError, OSError) as e:
        # One line: some messages (a database driver's) run over several.
        text = str(e).strip()
        print(f"marsvision: error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

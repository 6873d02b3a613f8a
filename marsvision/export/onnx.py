"""`marsvision export`: torch checkpoint → ONNX fp32 → int8 QDQ (ONNX Runtime static quantisation).

The export checks its own output and raises ``ExportCheckError`` with the numbers when a check
fails; nothing is moved into place then. Checks: fp32 ONNX vs torch logits on a real val batch
(max abs difference), int8 vs fp32 top-1 agreement on val, and the val/test accuracy and
macro-F1 of every written file. Files are written atomically (temporary name, then rename).

With ``--tune-epochs`` > 0 (the default) a copy of the model is first weight-tuned for int8
(int8_tuning.py) and that copy is what gets quantised; the fp32 files keep the original weights.
The quantisation itself lives in quantize.py. The default options were chosen by measurement
on val (docs/edge-runtime.md).
Needs the ``[train]`` extra (torch, timm, onnx); running the result needs only onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx  # the [train] extra: imported first so a missing extra fails at once, with the install hint
import torch

from ..atomic import atomic_write, move_into_place
from ..data.msl import DATA_HELP, MSLDataset, balanced_subset, decode_many
from ..errors import MarsvisionError
from ..files import sha256_file
from ..inference.classifier import available_cpus
from ..inference.onnx_runtime import OnnxClassifier
from ..model_file import BUNDLED_SOURCE, bundled_source_path
from ..nets.checkpoint import build_model, read_model_file
from ..preprocess import normalize
from .fp32 import OPSET, export_fp32
from .head import features_model
from .quantize import float_conv_indices, quantize_int8


def _f(default, help_: str):
    return field(default=default, metadata={"help": help_})


@dataclass
class ExportConfig:
    """Export a model file to ONNX (fp32) and, with --int8, a statically quantised int8 ONNX model."""

    model: str = _f("", f"torch model file to export (default: the bundled model's source, {BUNDLED_SOURCE})")
    output: str = _f(
        "",
        "folder for the exported model: <name>.int8.onnx with --int8, else <name>.onnx "
        "(default: beside the model file)",
    )
    int8: bool = _f(False, "also write the int8 model (static QDQ quantisation, calibrated on train images)")
    work: str = _f(
        "",
        "run folder for the fp32 file when --int8 is given, config.json and export.json with "
        "every check (default: runs/export/<name>)",
    )
    data: str = _f("", DATA_HELP)
    calib_images: int = _f(300, "train images to calibrate activation ranges on (class-balanced)")
    calib_method: str = _f("percentile", "calibration: minmax, entropy or percentile")
    percentile: float = _f(99.999, "percentile for --calib-method percentile")
    per_channel: bool = _f(True, "per-output-channel weight scales (essential for depthwise convolutions)")
    activation_type: str = _f("uint8", "activation type: uint8 or int8")
    weight_type: str = _f("int8", "weight type: int8 or uint8")
    keep_float: str = _f(
        "first:3,classifier",
        "comma-separated nodes left in float: 'first:K' / 'last:K' (the first / last K "
        "convs), 'stem' (= first:1), 'classifier' (the last Gemm) or node names of the "
        "pre-processed graph",
    )
    check_images: int = _f(0, "val and test images used by the checks (0: all)")
    max_logit_diff: float = _f(1e-3, "fail if fp32 ONNX and torch logits differ by more than this")
    min_agreement: float = _f(0.97, "fail if int8 and fp32 top-1 agree on less than this fraction of val")
    max_accuracy_drop: float = _f(0.01, "fail if int8 val or test accuracy is below fp32 by more than this")
    tune_epochs: int = _f(
        2,
        "epochs of int8 weight tuning before quantising: the conv weights are nudged so their "
        "int8 rounding reproduces the fp32 logits on train images (0: plain post-training)",
    )
    tune_lr: float = _f(2e-5, "Adam learning rate of the int8 weight tuning")
    tune_images: int = _f(0, "train images for the weight tuning, class-balanced (0: all)")
    trust: bool = _f(
        True,
        "fit each file's calibrated confidence and unknown-image data on the model's training "
        "splits (as `marsvision calibrate` does)",
    )
    threads: int = _f(0, "CPU threads (0: all)")


class ExportCheckError(MarsvisionError, RuntimeError):
    """An exported file failed a self-check; the message carries the numbers."""


@dataclass
class ExportResult:
    """What ``run_export`` wrote and measured (also the work folder's export.json)."""

    source: str
    config: dict
    checks: dict = field(default_factory=dict)  # name → {value, limit, images} or per-split scores
    files: dict = field(default_factory=dict)  # kind (fp32, int8) → {path, bytes, sha256}
    trust: dict = field(default_factory=dict)  # kind → {calibration, novelty}: what calibration measured
    int8_tuning: dict | None = None
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def quant_options(cfg: ExportConfig) -> dict:
    """The int8 options as plain data: what ``quantize_int8`` takes and the int8 file and export.json record."""
    return {
        "format": "QDQ",
        "activation_type": cfg.activation_type,
        "weight_type": cfg.weight_type,
        "per_channel": cfg.per_channel,
        "calib_method": cfg.calib_method,
        "calib_images": cfg.calib_images,
        **({"percentile": cfg.percentile} if cfg.calib_method == "percentile" else {}),
        "keep_float": [n for n in cfg.keep_float.split(",") if n],
        **(
            {"weight_tuning": {"epochs": cfg.tune_epochs, "lr": cfg.tune_lr, "images": cfg.tune_images or "all train"}}
            if cfg.tune_epochs > 0
            else {}
        ),
    }


def tuning_images(dataset, cfg: ExportConfig) -> list[Path]:
    """The train images for ``--tune-epochs``: all, or a class-balanced ``--tune-images`` subset."""
    train = dataset.split("train")
    idx = balanced_subset(train.labels, cfg.tune_images) if cfg.tune_images else range(len(train))
    return [train.paths[i] for i in idx]


def tune_and_export(
    ckpt: dict, meta: dict, fp32: Path, out: Path, paths: list[Path], cfg: ExportConfig, threads: int
) -> dict:
    """Weight-tune a copy of the model for int8 (int8_tuning.py) and export it to ``out``: the quantiser's
    input instead of ``fp32`` (whose graph names the convs kept in float). Returns the tuning summary."""
    from .int8_tuning import quantised_convs, tune_for_int8

    model = build_model(ckpt)
    n_model = len(quantised_convs(model, []))
    n_graph = sum(n.op_type == "Conv" for n in onnx.load(str(fp32), load_external_data=False).graph.node)
    if n_model != n_graph:  # convs are matched to graph nodes by position
        raise ExportCheckError(
            f"int8 weight tuning: the model has {n_model} convs, its ONNX graph {n_graph}; export with --tune-epochs 0"
        )
    summary = tune_for_int8(
        model,
        paths,
        int(meta["input_size"]),
        meta["mean"],
        meta["std"],
        float_conv_indices(fp32, quant_options(cfg)["keep_float"]),
        cfg.tune_epochs,
        cfg.tune_lr,
        threads=threads,
        progress=sys.stderr.isatty(),
    )
    export_fp32(model, meta, out)
    return summary


# ---------------------------------------------------------------------------------------------
# checks


def onnx_logits(path: Path, images_u8: np.ndarray, threads: int, batch_size: int = 32) -> np.ndarray:
    """Logits of an ONNX file through the runtime the package uses (``OnnxClassifier``)."""
    clf = OnnxClassifier(path, threads=threads)
    return np.concatenate([clf.logits(images_u8[i : i + batch_size]) for i in range(0, len(images_u8), batch_size)])


def split_scores(logits: np.ndarray, true_names: list[str], class_names: list[str]) -> dict:
    from ..metrics import classification_metrics

    names = list(class_names) + sorted(set(true_names) - set(class_names))
    index = {n: i for i, n in enumerate(names)}
    m = classification_metrics([index[t] for t in true_names], logits.argmax(1), names)
    return {"accuracy": round(m["accuracy"], 5), "macro_f1": round(m["macro_f1"], 5)}


def run_export(cfg: ExportConfig) -> ExportResult:
    """`marsvision export`: write the file(s), run every check, print and return the report."""
    src = Path(cfg.model) if cfg.model else bundled_source_path()
    dataset = MSLDataset(cfg.data or None)  # fail on a missing data set before any work
    ckpt = read_model_file(src)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["source"] = {"file": src.name, "sha256": sha256_file(src)[0]}
    size, names = int(meta["input_size"]), list(meta["class_names"])
    trust_splits = meta.get("config", {}).get("train_splits") or "train"
    trust_c = float(meta.get("metrics", {}).get("C") or meta.get("config", {}).get("c") or 1.0)
    meta.pop("trust", None)  # the torch file's: fitted on its own (bf16) features, not the exported file's
    threads = cfg.threads or available_cpus()
    torch.set_num_threads(threads)
    out_dir = Path(cfg.output) if cfg.output else src.parent
    work = Path(cfg.work) if cfg.work else Path("runs") / "export" / src.stem
    fp32_final = (work if cfg.int8 else out_dir) / f"{src.stem}.onnx"
    int8_final = out_dir / f"{src.stem}.int8.onnx"
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[export {time.perf_counter() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)

    def images(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
        s = dataset.split(split)
        idx = balanced_subset(s.labels, n, seed) if n and n < len(s) else np.arange(len(s))
        log(f"decoding {len(idx)} {split} images")
        u8 = decode_many([s.paths[i] for i in idx], size, workers=threads)
        return u8, [dataset.class_names[int(c)] for c in s.labels[idx]]

    report = ExportResult(str(src), asdict(cfg))
    checks, failures = report.checks, report.failures
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(work / "config.json") as f:
        json.dump({**asdict(cfg), "model": str(src), "work": str(work), "output": str(out_dir)}, f, indent=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=work))
    try:
        val_u8, val_true = images("val", cfg.check_images)
        test_u8, test_true = images("test", cfg.check_images)
        fp32 = tmp / fp32_final.name
        log(f"exporting {src} → ONNX fp32 (opset {OPSET})")
        model = build_model(ckpt)
        export_fp32(model, meta, fp32)

        # 1. fp32 ONNX reproduces torch on a real batch (pure fp32 torch, no autocast).
        batch = val_u8[:32]
        with torch.no_grad():
            ref = build_model(ckpt)(torch.from_numpy(normalize(batch, meta["mean"], meta["std"]))).numpy()
        diff = float(np.abs(onnx_logits(fp32, batch, threads) - ref).max())
        checks["fp32_vs_torch_max_abs_logit_diff"] = {"value": diff, "limit": cfg.max_logit_diff, "images": len(batch)}
        if not diff <= cfg.max_logit_diff:
            failures.append(
                f"fp32 ONNX logits differ from torch by {diff:.3g} (limit {cfg.max_logit_diff:g}) "
                f"on {len(batch)} val images"
            )
        log("fp32 val/test logits")
        logits = {"fp32": (onnx_logits(fp32, val_u8, threads), onnx_logits(fp32, test_u8, threads))}
        files = {"fp32": (fp32, fp32_final)}

        if cfg.int8:
            calib_split = dataset.split("train")
            cidx = balanced_subset(calib_split.labels, cfg.calib_images)
            log(f"calibrating on {len(cidx)} train images ({cfg.calib_method}), quantising to int8")
            calib = decode_many([calib_split.paths[i] for i in cidx], size, workers=threads)
            int8 = tmp / int8_final.name
            source = fp32
            if cfg.tune_epochs > 0:
                paths = tuning_images(dataset, cfg)
                log(f"int8 weight tuning: {cfg.tune_epochs} epochs on {len(paths)} train images")
                source = tmp / "tuned.onnx"
                report.int8_tuning = t = tune_and_export(ckpt, meta, fp32, source, paths, cfg, threads)
                log(
                    f"int8 weight tuning: logit MSE {t['loss_first']:.4f} → {t['loss_last']:.4f} ({t['seconds']:.0f} s)"
                )
            quantize_int8(source, int8, calib, meta, quant_options(cfg))
            del calib
            logits["int8"] = (onnx_logits(int8, val_u8, threads), onnx_logits(int8, test_u8, threads))
            files["int8"] = (int8, int8_final)
            # 2. int8 and fp32 agree on val.
            agree = float((logits["int8"][0].argmax(1) == logits["fp32"][0].argmax(1)).mean())
            checks["int8_vs_fp32_val_top1_agreement"] = {
                "value": agree,
                "limit": cfg.min_agreement,
                "images": len(val_u8),
            }
            # Reported, never a gate: test is not used for choices.
            checks["int8_vs_fp32_test_top1_agreement"] = {
                "value": float((logits["int8"][1].argmax(1) == logits["fp32"][1].argmax(1)).mean()),
                "images": len(test_u8),
            }
            if not agree >= cfg.min_agreement:
                failures.append(
                    f"int8 and fp32 top-1 agree on {agree:.2%} of {len(val_u8)} val images "
                    f"(limit {cfg.min_agreement:.2%})"
                )

        # 3. accuracy of every file on val and test.
        for kind, (val_logits, test_logits) in logits.items():
            checks[f"{kind}_scores"] = {
                "val": split_scores(val_logits, val_true, names),
                "test": split_scores(test_logits, test_true, names),
            }
        if cfg.int8:
            for split in ("val", "test"):
                a, b = checks["fp32_scores"][split]["accuracy"], checks["int8_scores"][split]["accuracy"]
                if not a - b <= cfg.max_accuracy_drop:
                    failures.append(
                        f"int8 {split} accuracy {b:.4f} is {a - b:.4f} below fp32 {a:.4f} "
                        f"(limit {cfg.max_accuracy_drop:g})"
                    )
        # 4. each file becomes a features graph (its classifier in the metadata) that gives the same
        # logits, then gets calibration and novelty data fitted on its own outputs.
        for kind, (path, final) in list(files.items()):
            features = tmp / f"{kind}.features.onnx"
            onnx.save(features_model(onnx.load(str(path)), str(path))[0], str(features))
            diff = float(np.abs(onnx_logits(features, val_u8[:32], threads) - logits[kind][0][:32]).max())
            checks[f"{kind}_features_graph_max_abs_logit_diff"] = {"value": diff, "limit": 1e-4}
            if not diff <= 1e-4:
                failures.append(f"{kind}: the features graph's logits differ from the logits graph's by {diff:.3g}")
            if cfg.trust and not failures:
                from .trust import fit_model_trust, write_onnx_trust

                log(f"{kind}: fitting calibration and novelty on {trust_splits}")
                trust = fit_model_trust(OnnxClassifier(features, threads=threads), dataset, trust_splits, trust_c)
                write_onnx_trust(features, features, trust)
                report.trust[kind] = {"calibration": trust.calibration.info, "novelty": trust.novelty.info}
            files[kind] = (features, final)
        for kind, (path, final) in files.items():
            report.files[kind] = {"path": str(final), "bytes": path.stat().st_size, "sha256": sha256_file(path)[0]}
        report.passed = not failures
        report.seconds = round(time.perf_counter() - t0, 1)
        with atomic_write(work / "export.json") as f:
            json.dump(asdict(report), f, indent=2)
        print(format_report(report))
        if failures:
            raise ExportCheckError(
                f"export checks failed (nothing written; details in {work / 'export.json'}): " + "; ".join(failures)
            )
        for path, final in files.values():
            move_into_place(path, final)
            log(f"wrote {final} ({final.stat().st_size / 2**20:.2f} MiB)")
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_report(report: ExportResult) -> str:
    c = report.checks
    lines = [f"{'file':<6} {'val acc':>8} {'val F1':>8} {'test acc':>8} {'test F1':>8}"]
    for kind in ("fp32", "int8"):
        if f"{kind}_scores" in c:
            s = c[f"{kind}_scores"]
            lines.append(
                f"{kind:<6} {s['val']['accuracy']:8.4f} {s['val']['macro_f1']:8.4f} "
                f"{s['test']['accuracy']:8.4f} {s['test']['macro_f1']:8.4f}"
            )
    d = c.get("fp32_vs_torch_max_abs_logit_diff")
    if d:
        lines.append(f"fp32 ONNX vs torch: max |logit diff| {d['value']:.2e} (limit {d['limit']:g})")
    a = c.get("int8_vs_fp32_val_top1_agreement")
    if a:
        t = c.get("int8_vs_fp32_test_top1_agreement", {}).get("value", float("nan"))
        lines.append(f"int8 vs fp32: top-1 agreement on val {a['value']:.2%} (limit {a['limit']:.0%}), on test {t:.2%}")
    lines.append("checks: " + ("passed" if report.passed else "FAILED"))
    return "\n".join(lines)

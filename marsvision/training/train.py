"""Fine-tuning with a kill-safe, exactly resumable loop.

Images are decoded once into a uint8 tensor (N, S, S, 3); each step gathers a batch, augments it
on the tensor side (``TrainPreset``) and trains under bf16 autocast on CPU / AMP on CUDA.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import atomic_save, atomic_write
from ..data.msl import DATA_HELP, MSLDataset, Split, decode_many
from ..errors import UsageError
from ..model_file import model_meta
from ..nets.checkpoint import build_model, read_model_file, save_model
from ..nets.device import autocast, pick_device
from ..nets.models import create_model, model_defaults
from .augment import EvalPreset, TrainPreset
from .engine import class_weights, epoch_order, evaluate, lr_at, run_folder


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Fine-tune a model on the MSL data set."""

    model: str = _f("efficientnet_lite0", "architecture: efficientnet_lite0, efficientnet_lite2 or small_cnn")
    data: str = _f("", DATA_HELP)
    train_splits: str = _f("train", "splits to train on, '+'-joined, e.g. train or train+val (final refit)")
    val_split: str = _f("val", "split evaluated each epoch (model selection when not trained on)")
    epochs: int = _f(6, "training epochs (default: the recipe chosen on val for Lite0)")
    batch_size: int = _f(32, "images per step")
    lr: float = _f(6e-4, "peak AdamW learning rate")
    weight_decay: float = _f(0.02, "AdamW weight decay")
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs")
    schedule: str = _f("cosine", "learning-rate schedule after warm-up: cosine or onecycle")
    label_smoothing: float = _f(0.1, "cross-entropy label smoothing")
    balance: str = _f("sampler", "class-imbalance handling: sampler, loss or none")
    balance_power: float = _f(0.5, "class weight = count^-power (0.5 = square-root balancing, 1 = full)")
    ema_decay: float = _f(0.998, "model EMA decay per step (0 disables EMA)")
    img_size: int = _f(0, "input size in pixels at evaluation/inference (0: the architecture's default)")
    train_size: int = _f(192, "training crop size in pixels, at most img_size (0: img_size); lower is faster")
    hflip: float = _f(0.5, "probability of a horizontal flip per training image")
    drop_rate: float = _f(0.2, "dropout before the classifier")
    pretrained: bool = _f(True, "start from ImageNet weights (EfficientNet-Lite)")
    init: str = _f("", "start from this model file's weights, e.g. a linear probe (LP-FT); same classes")
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "auto, cpu or cuda")
    out: str = _f("runs", "runs root: the run folder is <out>/train/<name>")
    name: str = _f("", "run folder name (default: <model>-<time>)")
    limit: int = _f(0, "use at most this many images per split (0: all); for smoke tests")
    workers: int = _f(0, "image decoding threads (0: automatic)")


def train_one_epoch(
    model,
    images_u8,
    labels,
    order,
    preset,
    optimizer,
    cfg,
    device,
    epoch,
    step0,
    total_steps,
    loss_weights=None,
    ema=None,
    progress=True,
) -> dict:
    """One pass over ``order``; returns {train_loss, img_per_s, lr}."""
    model.train()
    g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)  # augmentation randomness
    warmup = int(cfg.warmup_epochs * total_steps / cfg.epochs)
    batches = order.split(cfg.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
    total_loss, seen, t0, lr = 0.0, 0, time.perf_counter(), cfg.lr
    for i, idx in enumerate(bar):
        lr = lr_at(step0 + i, total_steps, warmup, cfg.lr, cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = preset(images_u8[idx].to(device), generator=g).contiguous(memory_format=torch.channels_last)
        y = labels[idx].to(device)
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=loss_weights, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(model, step=step0 + i)
        total_loss += loss.item() * len(idx)
        seen += len(idx)
        rate = seen / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
    return {"train_loss": total_loss / max(seen, 1), "img_per_s": seen / (time.perf_counter() - t0), "lr": lr}


class Run:
    """A run folder: config.json, results.csv, curves.png, last.pt (resumable), best.pt (model file)."""

    def __init__(self, path: Path):
        self.path = path

    def write_config(self, cfg: TrainConfig, extra: dict) -> None:
        with atomic_write(self.path / "config.json") as f:
            json.dump({**asdict(cfg), **extra}, f, indent=2)

    def write_history(self, history: list[dict]) -> None:
        keys = list(history[0])
        with atomic_write(self.path / "results.csv", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(history)
        from ..evaluation.report import plot_curves

        plot_curves(history, self.path / "curves.png")


def _load_split(ds: MSLDataset, names: str, cfg: TrainConfig) -> Split:
    split = ds.splits(names.split("+"))
    return split.subset(cfg.limit or None, cfg.seed) if cfg.limit else split


@dataclass
class ResumeOption:
    """`marsvision train`'s option outside the run's config (a run's config.json never holds it)."""

    resume: str = field(
        default="",
        metadata={
            "help": "continue the run in RUN_DIR exactly where it stopped (default: a new run)",
            "metavar": "RUN_DIR",
        },
    )


def train(cfg: TrainConfig, resume: str | None = None, progress: bool | None = None) -> Path:
    """Train per ``cfg`` (or continue the run in folder ``resume``); returns the run folder.

    ``progress`` (default: when stderr is a terminal) shows tqdm bars with loss, lr and img/s.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    state = None
    if resume:
        run_dir = Path(resume)
        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        cfg = TrainConfig(**state["config"])
    else:
        name = cfg.name or f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = run_folder(cfg.out, "train", name)
        if (run_dir / "last.pt").exists():
            raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
        run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(run_dir)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = pick_device(cfg.device)
    defaults = model_defaults(cfg.model)
    size = cfg.img_size or defaults["input_size"]

    ds = MSLDataset(cfg.data or None)
    train_split = _load_split(ds, cfg.train_splits, cfg)
    val_split = _load_split(ds, cfg.val_split, cfg)
    # Model classes: the ids that have training images, in official order (id 22 "sun" has none).
    class_ids = sorted(set(ds.splits(cfg.train_splits.split("+")).labels.tolist()))
    class_names = [ds.class_names[i] for i in class_ids]
    to_index = {c: i for i, c in enumerate(class_ids)}
    y_train = torch.tensor([to_index[c] for c in train_split.labels.tolist()])
    keep = [i for i, c in enumerate(val_split.labels.tolist()) if c in to_index]
    y_val = torch.tensor([to_index[val_split.labels[i]] for i in keep])
    x_train = torch.from_numpy(decode_many(train_split.paths, size, cfg.workers or None, progress))
    x_val = torch.from_numpy(decode_many([val_split.paths[i] for i in keep], size, cfg.workers or None, progress))

    model = create_model(cfg.model, len(class_names), pretrained=cfg.pretrained, drop_rate=cfg.drop_rate)
    if cfg.init and state is None:
        ckpt = read_model_file(cfg.init)
        if ckpt["arch"] != cfg.model or ckpt["class_names"] != class_names:
            raise UsageError(
                f"--init {cfg.init}: {ckpt['arch']} with {len(ckpt['class_names'])} classes does not "
                f"match {cfg.model} with {len(class_names)} classes"
            )
        model.load_state_dict(build_model(ckpt).state_dict())
    model = model.to(device).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    ema = None
    if cfg.ema_decay > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)
    weights = class_weights(y_train.numpy(), len(class_names), cfg.balance_power)
    sample_w = weights if cfg.balance == "sampler" else None
    loss_w = weights.to(device) if cfg.balance == "loss" else None
    if cfg.balance not in ("sampler", "loss", "none"):
        raise UsageError(f"balance must be sampler, loss or none, got {cfg.balance!r}")

    history, start_epoch, best = [], 0, -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, start_epoch, best = state["history"], state["epoch"] + 1, state["best"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
    select_on_val = not (set(cfg.val_split.split("+")) & set(cfg.train_splits.split("+")))
    run.write_config(
        cfg,
        {
            "run_dir": str(run_dir),
            "input_size": size,
            "class_names": class_names,
            "device": str(device),
            "n_train": len(train_split),
            "n_val": len(keep),
            "selection": "best val macro-F1" if select_on_val else "last epoch",
        },
    )
    train_preset = TrainPreset(
        defaults["mean"], defaults["std"], out_size=min(cfg.train_size or size, size), hflip=cfg.hflip
    )
    eval_preset = EvalPreset(defaults["mean"], defaults["std"])
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    meta = dict(
        arch=cfg.model,
        class_names=class_names,
        input_size=size,
        mean=defaults["mean"],
        std=defaults["std"],
        drop_rate=cfg.drop_rate,
        config=asdict(cfg),
    )

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        order = epoch_order(y_train.numpy(), sample_w, epoch, cfg.seed)
        stats = train_one_epoch(
            model,
            x_train,
            y_train,
            order,
            train_preset,
            optimizer,
            cfg,
            device,
            epoch,
            epoch * steps_per_epoch,
            cfg.epochs * steps_per_epoch,
            loss_w,
            ema,
            progress,
        )
        eval_model = ema.module if ema is not None else model
        # When val is part of training it cannot select anything: evaluate it once, at the end.
        last = epoch == cfg.epochs - 1
        val = evaluate(eval_model, x_val, y_val, eval_preset, device, class_names) if select_on_val or last else None
        row = {
            "epoch": epoch + 1,
            "train_loss": round(stats["train_loss"], 5),
            "lr": stats["lr"],
            "img_per_s": round(stats["img_per_s"], 2),
        }
        for key, name in [
            ("val_loss", "loss"),
            ("val_acc", "accuracy"),
            ("val_macro_f1", "macro_f1"),
            ("val_weighted_f1", "weighted_f1"),
        ]:
            row[key] = round(val[name], 5) if val else None
        row["epoch_s"] = round(time.perf_counter() - t0, 1)
        history.append(row)
        score = val["macro_f1"] if select_on_val else epoch
        if score > best:
            best = score
            save_model(
                run_dir / "best.pt",
                eval_model,
                model_meta(
                    **meta,
                    metrics={
                        "epoch": epoch + 1,
                        "val": {k: val[k] for k in ("accuracy", "macro_f1", "weighted_f1")} if val else None,
                    },
                ),
            )
        run.write_history(history)
        buf = io.BytesIO()  # serialise fully before the atomic rename
        torch.save(
            {
                "config": asdict(cfg),
                "epoch": epoch,
                "best": best,
                "history": history,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            },
            buf,
        )
        atomic_save(lambda tmp, b=buf: Path(tmp).write_bytes(b.getvalue()), run_dir / "last.pt")
        scores = f"val acc {row['val_acc']:.4f}  val macro-F1 {row['val_macro_f1']:.4f}  " if val else ""
        print(
            f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  {scores}"
            f"{row['img_per_s']:.1f} img/s  {row['epoch_s']:.0f}s",
            flush=True,
        )
    return run_dir

"""Partial fine-tuning from the bundled probe recipe, with weight-space interpolation: val, then forward in time.

    python benchmarks/partial_finetune.py --data ../shared/data/msl-images

Full fine-tuning and LP-FT lose 8-12 pt of val accuracy to the frozen probe (models.md). This
benchmark tests the gentler variants that the robustness literature recommends under distribution
shift, at the bundled model's inference cost (multi-level Lite0 at 192 px):

- LP-FT of the last two block stages and the head only (``blocks[5]``, ``blocks[6]``,
  ``conv_head``; BatchNorm statistics frozen), started from the C = 1 probe folded into the
  classifier (Kumar et al., "Fine-Tuning can Distort Pretrained Features", ICLR 2022);
- WiSE-FT: every tuned weight interpolated as (1 - alpha) * probe + alpha * tuned, alpha = 0.25 …
  1 (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022).

The first five stages stay frozen, so their outputs (N, 112, 12, 12) are computed once per
training view (the image and two mild random crops/rotations/colour changes, no mirror: mirrored
copies hurt the probe) and training runs on the cached maps. Two stages, the rule fixed before
the run that decides:

1. val (fitted on train): every setting (class balancing by a square-root sampler or by a fully
   balanced loss, like the probe; peak learning rate) and alpha, with paired 95 % bootstrap
   intervals against the probe. A (setting, alpha) passes this gate if no interval is below 0
   and one is above 0.
2. forward-in-time: those that pass are refitted (probe, then tuning) on each forward chaining of
   probe_forward.py (B = 4, 5, 6 sol blocks of train+val) and compared there with the probe of
   the same fold. As in probe_forward.py, one replaces the probe only if its macro-F1 interval is
   above 0 in every chaining and no interval anywhere is below 0. If several do, the one with the
   highest val macro-F1 is bundled (``marsvision probe --tune-epochs``, ``marsvision.probe_tuning``).

Writes ``benchmarks/results/partial_finetune.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe_forward import compare, replaces_shipped, selectors, train_val_by_sol  # noqa: E402
from result_files import write_results  # noqa: E402
from marsvision.data import decode_many  # noqa: E402
from marsvision.probe import fit_head, fold_head, frozen_backbone  # noqa: E402
from marsvision.probe_tuning import (ProbeTail, frozen_stage_maps, interpolate, probe_features,  # noqa: E402
                                     tail_outputs, tune_tail)

SETTINGS = ([{"balance": "sampler", "lr": lr} for lr in (3e-5, 1e-4, 3e-4, 1e-3)]
            + [{"balance": "loss", "lr": lr} for lr in (3e-5, 1e-4, 3e-4)])
ALPHAS = (0.25, 0.5, 0.75, 1.0)


def run_fold(backbone, maps, feats, y, fit, scored, settings, alphas, epochs) -> tuple[np.ndarray, dict, dict]:
    """Fit the C = 1 probe on ``fit`` and tune from it. Returns predictions for ``scored`` of the probe
    and of every (setting label, alpha), and each setting's tuning img/s."""
    k = int(y.max()) + 1
    probe = ProbeTail(backbone, *map(torch.from_numpy, fold_head(fit_head(feats[fit], y[fit], 1.0), k)))
    held = maps[0, scored]
    preds, rates = {}, {}
    for s in settings:
        tuned, rates[label(s)] = tune_tail(probe, maps, fit, y[fit], s["lr"], epochs, s["balance"])
        for alpha in alphas:
            preds[label(s), alpha] = tail_outputs(interpolate(probe, tuned, alpha), held).argmax(1).numpy()
    return tail_outputs(probe, held).argmax(1).numpy(), preds, rates


def label(setting: dict) -> str:
    return f"{setting['balance']}, lr {setting['lr']:g}"


def gate(sc: dict) -> bool:
    """Val gate before the forward check: no interval below 0, one above 0."""
    cis = [sc["acc_diff_ci95"], sc["macro_f1_diff_ci95"]]
    return all(hi >= 0 for _, hi in cis) and any(lo > 0 for lo, _ in cis)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="data set folder")
    ap.add_argument("--img-size", type=int, default=192, help="input size in pixels")
    ap.add_argument("--epochs", type=int, default=3, help="tuning epochs per setting")
    ap.add_argument("--views", type=int, default=3, help="cached training views per image")
    ap.add_argument("--blocks", default="4,5,6", help="forward chainings (time blocks of train+val), comma-separated")
    args = ap.parse_args()
    start_time = time.perf_counter()

    paths, y, names, sols, n_train = train_val_by_sol(args.data)
    backbone, preset = frozen_backbone("efficientnet_lite0_multilevel")
    maps = frozen_stage_maps(backbone, torch.from_numpy(decode_many(paths, args.img_size)), preset, args.views)
    feats = probe_features(backbone, maps[0])  # (N, 1792)
    sels = selectors(y, sols, n_train, [int(b) for b in args.blocks.split(",")])
    print(f"cached maps {tuple(maps.shape)}: {time.perf_counter() - start_time:.0f} s", flush=True)

    # Stage 1, val (fitted on train): every setting and alpha.
    (fit, scored), = sels["val"]
    base, preds, rates = run_fold(backbone, maps, feats, y, fit, scored, SETTINGS, ALPHAS, args.epochs)
    val = {key: compare(y[scored], p, base, names) for key, p in preds.items()}
    probe = {"val": compare(y[scored], base, base, names)}
    passed = [key for key, sc in val.items() if gate(sc)]
    print(f"val grid: {time.perf_counter() - start_time:.0f} s; through the gate: {passed}", flush=True)

    # Stage 2, forward chaining for the settings through the gate.
    forward = {}
    for setting in [s for s in SETTINGS if any(label(s) == key[0] for key in passed)]:
        alphas = [a for key, a in passed if key == label(setting)]
        for sel, folds in sels.items():
            if sel == "val":
                continue
            runs = [run_fold(backbone, maps, feats, y, fit, scored, [setting], alphas, args.epochs) for fit, scored in folds]
            truth = np.concatenate([y[scored] for _, scored in folds])
            fold_base = np.concatenate([r[0] for r in runs])
            probe[sel] = compare(truth, fold_base, fold_base, names)  # the same for every setting
            for alpha in alphas:
                pred = np.concatenate([r[1][label(setting), alpha] for r in runs])
                forward.setdefault((label(setting), alpha), {})[sel] = compare(truth, pred, fold_base, names)
            print(f"{label(setting)} {sel}: {time.perf_counter() - start_time:.0f} s", flush=True)

    rows = []
    for (setting, alpha), sc in val.items():
        scores = {"val": sc, **forward.get((setting, alpha), {})}
        verdict = replaces_shipped(scores) if (setting, alpha) in forward else None
        rows.append({"setting": setting, "alpha": alpha, "tune_img_per_s": round(rates[setting], 1),
                     "through_val_gate": (setting, alpha) in passed, "scores": scores, "replaces_shipped": verdict})
    minutes = (time.perf_counter() - start_time) / 60

    def cell(sc: dict) -> str:
        return (f"{sc['acc']:.3f} / {sc['macro_f1']:.3f} ({100 * sc['acc_diff_ci95'][0]:+.1f}..{100 * sc['acc_diff_ci95'][1]:+.1f})"
                f" / ({100 * sc['macro_f1_diff_ci95'][0]:+.1f}..{100 * sc['macro_f1_diff_ci95'][1]:+.1f})")

    cols = list(sels)
    md = ["# Partial fine-tuning (last two stages + head) from the probe, WiSE-FT interpolation", "",
          f"Lite0 multi-level at {args.img_size} px, {args.epochs} epochs on {args.views} cached views. Cells: "
          "accuracy / macro-F1, then the paired 95 % bootstrap intervals (points) of the differences to the "
          "frozen C = 1 probe fitted on the same images. Forward columns score held-out images of seen classes "
          "(probe_forward.py's chainings); only settings through the val gate (no interval below 0, one above) "
          "are run there.", "",
          "| setting | alpha | " + " | ".join(cols) + " | replaces the probe |", "|---|---|" + "---|" * (len(cols) + 1),
          "| frozen probe, C = 1 | 0 | " + " | ".join(f"{probe[c]['acc']:.3f} / {probe[c]['macro_f1']:.3f}" if c in probe else "–"
                                                   for c in cols) + " | – |"]
    md += [f"| {r['setting']} | {r['alpha']:g} | " + " | ".join(cell(r["scores"][c]) if c in r["scores"] else "–" for c in cols)
           + f" | {'–' if r['replaces_shipped'] is None else 'yes' if r['replaces_shipped'] else 'no'} |" for r in rows]
    md += ["", "Rule (probe_forward.py's): replace the probe only if every forward macro-F1 interval is above 0 "
           "and no interval of any column is below 0.",
           f"Tuning speed on cached maps: {', '.join(f'{k}: {v:.0f} img/s' for k, v in rates.items())}. "
           f"Total run {minutes:.1f} min on this machine."]
    write_results("partial_finetune", {"img_size": args.img_size, "epochs": args.epochs, "views": args.views,
                                       "probe": probe, "rows": rows, "minutes": round(minutes, 1)}, "\n".join(md))


if __name__ == "__main__":
    main()

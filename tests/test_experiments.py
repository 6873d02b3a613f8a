"""The experiments under experiments/ still import and work: they are research records, not the product,
but their scripts must keep running against the package they import."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MINI_DATA = REPO / "tests" / "assets" / "mini-msl"

sys.path.insert(0, str(REPO / "experiments"))
sys.path.insert(0, str(REPO / "benchmarks"))


def test_tail_reproduces_the_multilevel_network_and_interpolation_ends():
    import torch
    from probe_tuning import FROZEN_STAGES, ProbeTail, average, interpolate

    from marsvision.nets.models import create_model

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_multilevel", 5, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = model.net.bn1(model.net.conv_stem(x))
        for block in model.net.blocks[:FROZEN_STAGES]:
            h = block(h)  # (2, 112, 4, 4)
        tail = ProbeTail(model, model.classifier.weight.data, model.classifier.bias.data).eval()
        torch.testing.assert_close(tail(h), model(x))
        other = ProbeTail(model, torch.randn(5, 1792), torch.randn(5)).eval()
        for p in other.stage6.parameters():
            p.add_(1.0)
        torch.testing.assert_close(interpolate(tail, other, 0.0)(h), tail(h))
        torch.testing.assert_close(interpolate(tail, other, 1.0)(h), other(h))
        # A soup of two is their midpoint, and a soup of one model is that model, bit for bit.
        torch.testing.assert_close(average([tail, other])(h), interpolate(tail, other, 0.5)(h))
        assert all(
            torch.equal(a, b)
            for a, b in zip(average([other]).state_dict().values(), other.state_dict().values(), strict=True)
        )
        other.fold_into(model)
        torch.testing.assert_close(model(x), other(h))


def test_self_training_adds_only_confident_pseudo_labels():
    import numpy as np
    from self_training import self_train

    from marsvision.training.probe import fit_head

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    centres = np.eye(3, 8) * 4
    x = centres[y] + rng.normal(size=(90, 8))
    # The unlabelled images come from a later period: the same classes, shifted.
    y_pool = np.repeat([0, 1, 2], 40)
    pool = centres[y_pool] + 1.5 + rng.normal(size=(120, 8))
    none, kept = self_train(x, y, pool, 1.0, threshold=1.01)
    assert not kept.any()
    ref = fit_head(x, y, 1.0)
    assert np.allclose(none.predict_proba(pool), ref.predict_proba(pool))
    adapted, kept = self_train(x, y, pool, 1.0, threshold=0.9)
    assert 0 < kept.sum() < len(pool)
    assert (ref.predict_proba(pool).max(1) >= 0.9).sum() == kept.sum()
    assert (adapted.predict(pool) == y_pool).mean() >= (ref.predict(pool) == y_pool).mean()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["tuned_probe.py", "self_training.py"])
def test_experiment_scripts_write_ordinary_model_files(script, tmp_path):
    from marsvision.inference.predict import load_model

    extra = (
        ["--epochs", "1", "--seeds", "1", "--views", "1", "--img-size", "64"]
        if script == "tuned_probe.py"
        else ["--adapt", "test", "--img-size", "64"]
    )
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / script),
            "--data",
            str(MINI_DATA),
            "--out",
            str(tmp_path),
            "--name",
            "x",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    preds = load_model(tmp_path / "experiments" / "x" / "best.pt").predict(
        sorted((MINI_DATA / "images").glob("*.JPG"))[:3]
    )
    assert all(p.ok and p.label for p in preds)


@pytest.mark.parametrize(
    "script", ["probe_forward", "probe_cv", "probe_ablation", "partial_finetune", "quantization_scan"]
)
def test_experiment_modules_import(script):
    __import__(script)


def _novelty_toy(seed=0, per=30, classes=4, dims=24):
    """Classes as clusters about their own directions, each photographed across many sols."""
    import numpy as np

    centres = np.random.default_rng(42).normal(size=(classes, dims)) * 4
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.abs(c + rng.normal(size=(per, dims))) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(classes), per), np.tile(np.arange(per) * 15, classes)


def test_leave_one_class_out_ranks_an_unseen_cluster_first():
    import numpy as np
    from novelty import BEFORE, TWO_PART, leave_one_class_out

    x, y, sols = _novelty_toy()
    qx, qy, _ = _novelty_toy(seed=1)
    names = {i: f"class {i}" for i in range(4)}
    out = leave_one_class_out(x, x, y, sols, qx, qx, qy, names)
    # every class, once left out of the references, is the most novel kind of image in the queries
    assert set(out) == {TWO_PART, BEFORE} and len(out[TWO_PART]) == 4
    assert min(out[TWO_PART].values()) > 0.95
    # and a query set in which the left-out class looks like the rest gives no such ranking
    same = leave_one_class_out(x, x, y, sols, qx, qx, np.random.default_rng(0).permutation(qy), names)
    assert np.mean(list(same[TWO_PART].values())) < 0.8


def test_novelty_methods_loco_and_coreset():
    import numpy as np
    from novelty_methods import coreset, knn_loco

    x, y, _ = _novelty_toy()
    qx, qy, _ = _novelty_toy(seed=1)
    res, without, ood = knn_loco(qx, x, y, qy, np.arange(4), 1, ood_q=qx[:3] + 100)
    assert min(res.values()) > 0.95 and ood == 1.0 and without(0).shape == (len(qx),)
    # greedy k-center: the far-away point is picked among the first
    pts = np.r_[np.zeros((50, 3)), [[100.0, 0, 0]]].astype(np.float32)
    assert 50 in coreset(pts + np.random.default_rng(0).normal(size=pts.shape).astype(np.float32) * 0.01, 2, dims=3)


@pytest.mark.slow  # 15 s: it imports torch and every script
def test_every_benchmark_and_experiment_script_imports():
    """A script whose import broke (benchmarks/abuse.py imported a module renamed away) fails here, not on the
    day someone reruns it. Importing runs only the top level: every script keeps its work under main(). A
    designed exit at import (benchmarks/ood_set.py names the optional packages it lacks) is not a failure."""
    scripts = sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "experiments").glob("*.py"))
    code = (
        "import importlib.util, sys\n"
        "bad = []\n"
        "for path in sys.argv[1:]:\n"
        "    name = 'script_' + str(abs(hash(path)))\n"
        "    spec = importlib.util.spec_from_file_location(name, path)\n"
        "    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up\n"
        "    try:\n"
        "        spec.loader.exec_module(module)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    except Exception as e:\n"
        "        bad.append(f'{path}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env_path = f"{REPO / 'benchmarks'}:{REPO / 'experiments'}:{REPO}"
    run = subprocess.run(
        [sys.executable, "-c", code, *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
    )
    assert run.returncode == 0, run.stdout + run.stderr

"""A tiny real training run on real images, a simulated kill, and an exact resume."""

import csv
import json

import pytest
import torch

import marsvision.training.train as train_mod
from marsvision.cli import main
from marsvision.nets.checkpoint import read_model_file
from marsvision.training.engine import class_weights, lr_at
from marsvision.training.train import TrainConfig, train

RUN_FILES = {"best.pt", "config.json", "curves.png", "last.pt", "results.csv"}


def tiny_cfg(mini_data, tmp_path, name, **kw):
    base = dict(
        model="small_cnn",
        data=str(mini_data),
        img_size=48,
        epochs=2,
        batch_size=8,
        limit=32,
        out=str(tmp_path),
        name=name,
        pretrained=False,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_cli_one_epoch_lite0_on_real_images(mini_data, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "efficientnet_lite0",
            "--data",
            str(mini_data),
            "--img-size",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--limit",
            "32",
            "--out",
            str(tmp_path),
            "--name",
            "r",
        ]
    )
    assert code == 0
    run = tmp_path / "train" / "r"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "efficientnet_lite0" and cfg["input_size"] == 64 and cfg["epochs"] == 1
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert len(rows) == 1 and float(rows[0]["img_per_s"]) > 0 and 0 <= float(rows[0]["val_macro_f1"]) <= 1
    meta = read_model_file(run / "best.pt")
    assert meta["arch"] == "efficientnet_lite0" and meta["input_size"] == 64 and meta["mean"] == [0.5] * 3
    assert "drt side" in meta["class_names"] and "sun" not in meta["class_names"]
    assert json.loads(json.dumps({k: v for k, v in meta.items() if k != "state_dict"}))  # plain JSON-able data


@pytest.mark.slow
def test_kill_then_resume_matches_uninterrupted_run(mini_data, tmp_path, monkeypatch):
    ref = train(tiny_cfg(mini_data, tmp_path, "ref"), progress=False)

    real_epoch = train_mod.train_one_epoch
    calls = {"n": 0}

    def dies_in_second_epoch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a kill mid-epoch: last.pt still holds epoch 1, intact
        return real_epoch(*a, **kw)

    monkeypatch.setattr(train_mod, "train_one_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(mini_data, tmp_path, "killed"), progress=False)
    run = tmp_path / "train" / "killed"
    assert len(list(csv.DictReader((run / "results.csv").open()))) == 1
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left
    monkeypatch.setattr(train_mod, "train_one_epoch", real_epoch)

    train(TrainConfig(), resume=str(run), progress=False)
    a = list(csv.DictReader((ref / "results.csv").open()))
    b = list(csv.DictReader((run / "results.csv").open()))
    assert [r["epoch"] for r in b] == ["1", "2"]
    for ra, rb in zip(a, b, strict=True):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-4)
        assert ra["val_macro_f1"] == rb["val_macro_f1"]
    wa = torch.load(ref / "last.pt", weights_only=False)["model"]
    wb = torch.load(run / "last.pt", weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_existing_run_is_not_overwritten(mini_data, tmp_path):
    train(tiny_cfg(mini_data, tmp_path, "x", ema_decay=0.0), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_cfg(mini_data, tmp_path, "x"), progress=False)


def test_schedule_and_weights():
    assert lr_at(0, 100, 10, 1.0, "cosine") == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0, "cosine") == pytest.approx(1.0)
    assert lr_at(99, 100, 10, 1.0, "cosine") < 0.02
    w = class_weights(torch.tensor([0, 0, 0, 0, 1]).numpy(), 3, power=1.0)
    assert w[1] == pytest.approx(4 * w[0]) and w[2] == 0


@pytest.mark.slow
def test_trainval_refit_selects_last_epoch(mini_data, tmp_path):
    run = train(tiny_cfg(mini_data, tmp_path, "tv", train_splits="train+val"), progress=False)
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert rows[0]["val_acc"] == "" and rows[1]["val_acc"] != ""  # val is evaluated once, at the end
    assert json.loads((run / "config.json").read_text())["selection"] == "last epoch"
    assert read_model_file(run / "best.pt")["metrics"]["epoch"] == 2


@pytest.mark.slow
def test_init_from_model_file_lp_ft(mini_data, tmp_path, tiny_model):
    first = train(tiny_cfg(mini_data, tmp_path, "first", epochs=1), progress=False)
    second = train(tiny_cfg(mini_data, tmp_path, "second", epochs=1, init=str(first / "best.pt")), progress=False)
    assert json.loads((second / "config.json").read_text())["init"].endswith("best.pt")
    with pytest.raises(ValueError, match="does not match"):
        train(tiny_cfg(mini_data, tmp_path, "third", epochs=1, init=str(tiny_model)), progress=False)

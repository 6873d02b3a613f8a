import json

import pytest

from marsvision.cli import main


@pytest.mark.parametrize("argv", [[], ["train"], ["probe"], ["evaluate"], ["predict"], ["data", "download"], ["data", "verify"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: marsvision" in out
    if argv == ["train"]:
        assert "--label-smoothing" in out and "cross-entropy label smoothing" in out and "--resume" in out


def test_evaluate_cli_writes_report(tiny_model, real_data, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(tiny_model), "--split", "val", "--data", str(real_data),
                 "--out", str(out), "--limit", "40"])
    assert code == 0
    for f in ["metrics.json", "predictions.csv", "confusion_matrix.png", "error_gallery.png"]:
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 40 and 0 <= m["accuracy"] <= 1 and "most_confused" in m
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "precision" in printed


def test_verify_cli_on_real_copy(real_data, capsys):
    assert main(["data", "verify", "--data", str(real_data), "--quick"]) == 0


def test_missing_data_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MARSVISION_DATA", raising=False)
    assert main(["evaluate", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marsvision: error: data set not found") and err.count("\n") == 1

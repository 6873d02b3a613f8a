import json
import shutil

from marsvision.cli import main


def test_evaluate_cli_writes_report(tiny_model, mini_data, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_model),
            "--split",
            "val",
            "--data",
            str(mini_data),
            "--out",
            str(out),
            "--limit",
            "4",
        ]
    )
    assert code == 0
    for f in ["metrics.json", "predictions.csv", "confusion_matrix.png", "error_gallery.png"]:
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 4 and 0 <= m["accuracy"] <= 1 and "most_confused" in m
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "precision" in printed


def test_unreadable_images_are_named_one_line_each(tiny_model, mini_data, tmp_path, capsys):
    data = tmp_path / "copy"
    shutil.copytree(mini_data, data)
    names = [line.split()[0] for line in (data / "val-calibrated-shuffled.txt").read_text().splitlines()]
    (data / names[1]).write_bytes(b"")
    (data / names[3]).write_bytes((data / names[3]).read_bytes()[:500])
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tiny_model),
                "--split",
                "val",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(err)
    assert any(names[1] in line and line.endswith("empty file") for line in err)
    assert any(names[3] in line and "truncated" in line for line in err)
    assert err[-1].startswith("marsvision: error: 2 of 6 images of split val could not be read")
    assert not (tmp_path / "r" / "metrics.json").exists()

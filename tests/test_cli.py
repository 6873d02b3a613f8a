import pytest

from marsvision.cli import main


@pytest.mark.parametrize(
    "argv", [[], ["train"], ["probe"], ["evaluate"], ["predict"], ["data", "download"], ["data", "verify"]]
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: marsvision" in out
    if argv == ["train"]:
        assert "--label-smoothing" in out and "cross-entropy label smoothing" in out and "--resume" in out
    if argv == ["probe"]:  # product options only: the experiments live in experiments/
        assert "--name" in out and not any(o in out for o in ("--tune", "--adapt", "--drift"))


def test_verify_cli_on_real_copy(real_data, capsys):
    assert main(["data", "verify", "--data", str(real_data), "--quick"]) == 0


def test_missing_data_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MARSVISION_DATA", raising=False)
    assert main(["evaluate", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("marsvision: error: data set not found") and err.count("\n") == 1

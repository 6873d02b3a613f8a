import dataclasses

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


def test_a_library_bug_keeps_its_traceback(monkeypatch, example_images):
    # A ValueError from inside the library is a bug, not a user error: it must not become one line.
    import marsvision.inference.predict as predict

    def broken(*a, **k):
        raise ValueError("a bug in the library")

    monkeypatch.setattr(predict, "load_model", broken)
    with pytest.raises(ValueError, match="a bug in the library"):
        main(["predict", str(example_images[0])])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--engine", "nope", "x.jpg"], "--engine 'nope': choose one of local, ray"),
        (["predict", "--model", "missing.onnx", "x.jpg"], "missing.onnx"),
        (["models", "activate", "--db", "sqlite:///:memory:"], "activate needs a VERSION"),
    ],
)
def test_a_user_error_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("marsvision: error: ") and message in err and err.count("\n") == 1


def test_every_command_lists_its_configs_docstring():
    # The table's help is what `marsvision --help` lists without importing the command's module.
    from marsvision.cli import COMMANDS, load_command

    for name, command in COMMANDS.items():
        cls, run, _ = load_command(name)
        assert command.help == cls.__doc__, name
        assert callable(run) and dataclasses.is_dataclass(cls)

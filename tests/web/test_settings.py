"""`marsvision serve`'s settings: resolved once from the options and the environment; the CLI's options
come from ``ServeConfig``."""

from pathlib import Path

import pytest

from marsvision.web.settings import ServeConfig, Settings


def test_uploads_folder_from_option_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"MARSVISION_UPLOADS": str(tmp_path / "from-env")}
    assert ServeConfig().settings(env).uploads == tmp_path / "from-env"
    assert ServeConfig(uploads="given").settings(env).uploads == tmp_path / "given"  # resolved: absolute
    assert ServeConfig().settings({}).uploads == tmp_path / "marsvision-uploads"


def test_the_environment_is_read_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MARSVISION_UPLOADS", str(tmp_path / "first"))
    settings = ServeConfig().settings()
    monkeypatch.setenv("MARSVISION_UPLOADS", str(tmp_path / "second"))
    assert settings.uploads == tmp_path / "first"


def test_token_from_its_file_else_the_environment(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    env = {"MARSVISION_TOKEN": "from-env"}
    assert ServeConfig(token_file=str(tmp_path / "token")).settings(env).token == "from-file"
    assert ServeConfig().settings(env).token == "from-env"
    none = ServeConfig().settings({})
    assert none.token is None and none.writes == "disabled"
    assert ServeConfig(allow_anonymous_writes=True).settings({}).writes == "anonymous"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        ServeConfig(token_file=str(tmp_path / "empty")).settings(env)
    assert "from-env" not in repr(ServeConfig().settings(env))  # never printed


def test_options_become_the_apps_values(tmp_path):
    s = ServeConfig(db=str(tmp_path / "a.db"), max_upload_mb=1.5, threads=0, classify_slots=3).settings({})
    assert s.db == f"sqlite:///{tmp_path / 'a.db'}" and s.max_upload_bytes == 1572864
    assert s.threads is None and s.classify_slots == 3


def test_settings_travel_to_worker_processes_unchanged(tmp_path):
    s = Settings(db="sqlite:///x.db", token="t", classify_slots=4, threads=2, uploads=tmp_path / "u")
    assert Settings.from_json(s.to_json()) == s


def test_every_setting_is_a_serve_option():
    from marsvision.cli import build_parser

    args = build_parser(["serve"]).parse_args(
        ["serve", "--uploads", "up", "--workers", "2", "--no-allow-anonymous-writes"]
    )
    assert (args.uploads, args.workers, args.allow_anonymous_writes) == ("up", 2, False)
    cfg = ServeConfig(**{k: getattr(args, k) for k in ServeConfig.__dataclass_fields__})
    assert cfg.settings({}).uploads == Path("up").resolve()


def test_download_caps_are_serve_options():
    from marsvision.cli import build_parser

    args = build_parser(["serve"]).parse_args(["serve", "--max-download-files", "7", "--max-download-mb", "0.5"])
    s = ServeConfig(**{k: getattr(args, k) for k in ServeConfig.__dataclass_fields__}).settings({})
    assert (s.max_download_files, s.max_download_bytes) == (7, 524288)
    assert Settings.from_json(s.to_json()) == s


def test_the_vector_index_folder_comes_from_the_option_then_the_environment(tmp_path):
    from marsvision.web.settings import ServeConfig

    env = {"MARSVISION_VECTOR_INDEX": str(tmp_path / "env")}
    assert ServeConfig(db="x.db").settings(env).vector_index == str(tmp_path / "env")
    assert ServeConfig(db="x.db", vector_index=str(tmp_path / "opt")).settings(env).vector_index == str(
        tmp_path / "opt"
    )
    assert ServeConfig(db="x.db").settings({}).vector_index == ""  # archive.vectors.default_folder decides

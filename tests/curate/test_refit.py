"""Refits from curators' corrections: new versions, activation, rollback, labels CSVs, the review queue."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from marsvision.archive.db import Correction, Image, ModelVersion, open_engine, sessions
from marsvision.archive.index import IndexConfig, run_index
from marsvision.cli import main
from marsvision.curate.refit import LabelsError, RefitConfig, run_refit
from marsvision.inference.predict import load_model
from marsvision.web.app import create_app
from marsvision.web.settings import Settings

pytestmark = pytest.mark.slow  # each refit fits a logistic regression and writes a model file
TOKEN = {"Authorization": "Bearer t"}


@pytest.fixture
def archive(tmp_path, example_images):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    run_index([str(example_images[0].parent)], IndexConfig(db=db), progress=False)
    engine = open_engine(db)
    client = TestClient(create_app(Settings(token="t"), engine))
    yield db, client, tmp_path
    engine.dispose()


def labels(client) -> dict[int, str]:
    return {i["id"]: i["label"] for i in client.get("/api/images", params={"page_size": 100}).json()["items"]}


def test_correction_survives_refit_activate_and_rollback(archive, mini_data):
    db, client, tmp = archive
    before = labels(client)
    wheel = next(i for i, lab in before.items() if lab == "wheel")
    assert (
        client.put(f"/api/images/{wheel}/label", json={"label": "ground", "note": "x"}, headers=TOKEN).status_code
        == 200
    )
    result = run_refit(RefitConfig(db=db, data=str(mini_data), out=str(tmp / "runs")))
    assert result.inputs["corrections"] == 1 and result.activation.rescored == 12
    assert Path(result.files["onnx"]).is_file() and Path(result.files["torch"]).is_file()
    after = labels(client)  # the same app, no restart: the page shows the new labels
    assert after[wheel] == "ground" and client.get("/readyz").json()["model"] == result.version
    new = load_model(result.files["onnx"])
    assert new.meta["config"]["refit"]["corrections"] == 1 and new.trust.novelty.info["corrections_added"] == 1
    assert main(["models", "rollback", "--db", db]) == 0
    assert labels(client) == before
    assert main(["models", "activate", result.version, "--db", db]) == 0
    assert labels(client)[wheel] == "ground"
    engine = open_engine(db)
    with sessions(engine)() as s:
        assert s.scalar(select(func.count(Correction.id))) == 1  # never lost
        img = s.get(Image, wheel)
        assert img.reviewed_label == "ground" and s.get(ModelVersion, img.model_id).version == result.version
    engine.dispose()


def test_activate_endpoint_rescores_and_needs_the_token(archive, mini_data):
    db, client, tmp = archive
    some = next(iter(labels(client)))
    client.put(f"/api/images/{some}/label", json={"label": "scoop"}, headers=TOKEN)
    result = run_refit(RefitConfig(db=db, data=str(mini_data), out=str(tmp / "runs"), activate=False))
    assert client.get("/readyz").json()["model"] != result.version
    assert client.post(f"/api/models/{result.version}/activate").status_code == 401
    r = client.post(f"/api/models/{result.version}/activate", headers=TOKEN)
    assert r.status_code == 200 and r.json()["rescored"] == 12
    assert labels(client)[some] == "scoop" and client.get("/readyz").json()["model"] == result.version
    models = client.get("/api/models").json()["models"]
    assert [m["active"] for m in models] == [False, True] and models[1]["corrections"] == 1


def write_csv(path, rows):
    path.write_text("image,label\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return str(path)


def test_labels_csv_with_a_new_class(archive, mini_data, example_images):
    db, client, tmp = archive
    csv = write_csv(tmp / "l.csv", [(example_images[0], "sun"), (example_images[1], "sun")])
    with pytest.raises(LabelsError, match=r"l.csv: line 2: unknown class 'sun'"):
        run_refit(RefitConfig(db=db, labels=csv, data=str(mini_data), out=str(tmp / "runs")))
    result = run_refit(RefitConfig(db=db, labels=csv, new_classes="sun", data=str(mini_data), out=str(tmp / "runs")))
    clf = load_model(result.files["onnx"])
    assert clf.class_names[-1] == "sun" and len(clf.class_names) == 25
    assert [p.label for p in clf.predict(example_images[:2])] == ["sun", "sun"]


@pytest.mark.parametrize(
    "rows,message",
    [
        ([("{0}", "unicorn")], "line 2: unknown class 'unicorn'"),
        ([("/nowhere/x.jpg", "ground")], "line 2: unknown image"),
        ([("{0}", "ground"), ("{0}", "wheel")], "line 3: image .* is already labelled on line 2"),
    ],
)
def test_bad_labels_csv_is_one_line_error_and_writes_nothing(archive, mini_data, example_images, rows, message, capsys):
    db, client, tmp = archive
    csv = write_csv(tmp / "bad.csv", [(a.format(example_images[0]), b) for a, b in rows])
    assert main(["refit", "--db", db, "--labels", csv, "--data", str(mini_data), "--out", str(tmp / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and __import__("re").search(message, err)
    assert not (tmp / "runs").exists() and len(client.get("/api/models").json()["models"]) == 1


def test_refit_without_corrections_or_training_features_says_what_to_do(archive, capsys):
    db, client, tmp = archive
    assert main(["refit", "--db", db, "--out", str(tmp / "runs")]) == 2
    assert "no corrections" in capsys.readouterr().err
    client.put("/api/images/1/label", json={"label": "scoop"}, headers=TOKEN)
    assert main(["refit", "--db", db, "--out", str(tmp / "runs")]) == 2
    assert "--data DIR" in capsys.readouterr().err


def test_review_queue_lists_unreviewed_images(archive):
    db, client, tmp = archive
    first = client.get("/api/review", params={"limit": 3, "strategy": "margin"}).json()["items"]
    assert len(first) == 3 and all(i["reviewed_label"] is None for i in first)
    margins = [i["review_margin"] for i in first]
    assert margins == sorted(margins)
    client.put(f"/api/images/{first[0]['id']}/label", json={"label": "ground"}, headers=TOKEN)
    again = client.get("/api/review", params={"limit": 12}).json()["items"]
    assert first[0]["id"] not in [i["id"] for i in again] and len(again) == 11
    assert client.get("/api/review", params={"strategy": "nope"}).status_code == 422

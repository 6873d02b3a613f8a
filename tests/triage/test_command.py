"""`marsvision triage` end to end on the example images with the bundled model: outputs, budgets, the state
across runs (and a kill between them), a bad priorities file, bad input, determinism."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from marsvision.cli import main
from marsvision.triage.command import TriageConfig, run_triage
from marsvision.triage.state import STATE_FILE, load_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def sol_folder(tmp_path, example_images):
    folder = tmp_path / "sol"
    folder.mkdir()
    for p in example_images:
        shutil.copy(p, folder / p.name)
    return folder


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_with_a_bad_image_plans_every_input(sol_folder, tmp_path, capsys):
    (sol_folder / "9999MR0000000000000000E01_DRCL.JPG").write_bytes(b"not a jpeg")
    out = tmp_path / "plan.csv"
    assert main(["triage", str(sol_folder), "--budget-fraction", "0.25", "--output", str(out)]) == 1
    rows = read_csv(out)
    assert [int(r["rank"]) for r in rows] == list(range(1, 14))
    assert list(rows[0]) == [
        "rank", "path", "send", "reason", "label", "confidence", "novelty", "bytes", "cumulative_bytes", "error"
    ]  # fmt: skip
    assert sum(int(r["send"]) for r in rows) == 3  # 25 % of the 12 readable images
    bad = rows[-1]
    assert bad["path"].endswith("9999MR0000000000000000E01_DRCL.JPG") and bad["send"] == "0" and bad["error"]
    assert "9999MR" in capsys.readouterr().err


def test_byte_budget_and_json_output(sol_folder, tmp_path):
    out = tmp_path / "plan.json"
    assert main(["triage", str(sol_folder), "--budget-bytes", "20000", "--output", str(out)]) == 0
    rows = json.loads(out.read_text())
    sent = [r for r in rows if r["send"]]
    assert sent and sum(r["bytes"] for r in sent) <= 20000
    assert all(r["reason"] in ("novel", "priority class", "new view", "routine") for r in sent)


def test_count_budget_on_stdout(sol_folder, capsys):
    assert main(["triage", str(sol_folder), "--budget-count", "2"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 12 and [r["send"] for r in rows[:3]] == ["1", "1", "0"]


def test_no_budget_or_a_bad_priorities_file_is_one_line(sol_folder, tmp_path, capsys):
    assert main(["triage", str(sol_folder)]) == 2
    assert "exactly one budget" in capsys.readouterr().err
    bad = tmp_path / "p.toml"
    bad.write_text('[weights]\n"drill hole" = 3\n')
    assert main(["triage", str(sol_folder), "--budget-count", "2", "--priorities", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 2" in err and "drill hole" in err


def test_priorities_raise_a_class(sol_folder, tmp_path):
    plain = run_triage([str(sol_folder)], TriageConfig(budget_count=1, output=str(tmp_path / "0.csv")))
    first, last = plain.rows[0].label, plain.rows[-1].label
    assert first != last  # the example images hold several classes
    pri = tmp_path / "p.toml"
    pri.write_text(f'[weights]\n"{last}" = 50\n"{first}" = 0\n')
    cfg = TriageConfig(budget_count=1, priorities=str(pri), output=str(tmp_path / "p.csv"))
    plan = run_triage([str(sol_folder)], cfg)
    # the class ranked last without priorities is sent first with them, and the first goes last
    assert plan.rows[0].label == last and plan.rows[0].reason == "priority class"
    assert plan.rows[-1].label == first


def test_state_across_two_runs(sol_folder, tmp_path):
    state = tmp_path / "state"
    cfg = TriageConfig(budget_count=3, state=str(state), output=str(tmp_path / "1.csv"))
    first = run_triage([str(sol_folder)], cfg)
    assert len(load_state(state)) == 3
    cfg.output = str(tmp_path / "2.csv")
    second = run_triage([str(sol_folder)], cfg)
    sent = lambda plan: {r.path for r in plan.rows if r.send}  # noqa: E731
    assert not sent(first) & sent(second)  # what Earth has is not sent again ...
    again = {r.path: r.reason for r in second.rows}
    assert all(again[p] == "already on Earth" for p in sent(first))  # ... and the plan says why
    earth = load_state(state)
    assert len(earth) == 6 and len(earth.meta["plans"]) == 2
    assert set(earth.names) == sent(first) | sent(second)


def test_same_inputs_and_state_give_the_same_plan(sol_folder, tmp_path):
    state = tmp_path / "state"
    run_triage([str(sol_folder)], TriageConfig(budget_count=2, state=str(state), output=str(tmp_path / "0.csv")))
    shutil.copytree(state, tmp_path / "copy")
    for name, st in (("a", state), ("b", tmp_path / "copy")):
        run_triage(
            [str(sol_folder)], TriageConfig(budget_fraction=0.5, state=str(st), output=str(tmp_path / f"{name}.csv"))
        )
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert (state / STATE_FILE).read_bytes() == (tmp_path / "copy" / STATE_FILE).read_bytes()


def test_a_failure_before_the_state_is_replaced_leaves_the_old_state(sol_folder, tmp_path, monkeypatch):
    state = tmp_path / "state"
    run_triage([str(sol_folder)], TriageConfig(budget_count=2, state=str(state), output=str(tmp_path / "0.csv")))
    before = (state / STATE_FILE).read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("numpy.savez", fail)
    with pytest.raises(OSError, match="disk full"):
        run_triage([str(sol_folder)], TriageConfig(budget_count=2, state=str(state), output=str(tmp_path / "1.csv")))
    assert (tmp_path / "1.csv").exists()  # the plan is written first
    assert (state / STATE_FILE).read_bytes() == before
    assert sorted(os.listdir(state)) == [STATE_FILE]  # no temporary file left


KILL_MID_WRITE = """
import os, signal, sys
import numpy as np
def killed(f, **arrays):
    f.write(b"half a state" * 1000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
np.savez = killed
from marsvision.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_while_the_state_is_written_leaves_the_old_state(sol_folder, tmp_path):
    state = tmp_path / "state"
    run_triage([str(sol_folder)], TriageConfig(budget_count=2, state=str(state), output=str(tmp_path / "0.csv")))
    before = (state / STATE_FILE).read_bytes()
    args = [
        "triage",
        str(sol_folder),
        "--budget-count",
        "2",
        "--state",
        str(state),
        "--output",
        str(tmp_path / "1.csv"),
    ]
    env = {**os.environ, "PYTHONPATH": REPO}
    r = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *args], env=env, capture_output=True, timeout=120)
    assert r.returncode == -9, r.stderr.decode()
    assert (state / STATE_FILE).read_bytes() == before
    assert len(load_state(state)) == 2
    # and the next run goes on from the old state
    run_triage([str(sol_folder)], TriageConfig(budget_count=2, state=str(state), output=str(tmp_path / "2.csv")))
    assert len(load_state(state)) == 4


def test_a_new_state_can_start_from_a_data_set(sol_folder, tmp_path, mini_data):
    from marsvision.data.msl import MSLDataset

    state = tmp_path / "state"
    cfg = TriageConfig(budget_count=2, state=str(state), seed_data=str(mini_data), output=str(tmp_path / "1.csv"))
    run_triage([str(sol_folder)], cfg)
    earth = load_state(state)
    seeded = len(MSLDataset(mini_data).splits(["train", "val"]))
    assert len(earth) == seeded + 2
    assert earth.names[0].startswith("seed:") and earth.labels[0] and earth.class_counts()
    cfg.output = str(tmp_path / "2.csv")
    run_triage([str(sol_folder)], cfg)  # an existing state is not seeded again
    assert len(load_state(state)) == seeded + 4

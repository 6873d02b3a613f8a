"""The selection on made-up predictions: budgets, near-duplicates, reasons, unreadable inputs, determinism."""

from types import SimpleNamespace

import numpy as np
import pytest

from marsvision.errors import MarsvisionError
from marsvision.triage import Budget, Earth, PlanParams, plan_downlink

CLASSES = ["ground", "wheel", "drill holes"]


def pred(name, features, label="ground", novelty=0.5, confidence=0.9):
    probs = np.full(len(CLASSES), (1 - confidence) / (len(CLASSES) - 1), np.float32)
    probs[CLASSES.index(label)] = confidence
    return SimpleNamespace(
        ok=True,
        error=None,
        source=name,
        label=label,
        confidence=confidence,
        novelty=novelty,
        probabilities=probs,
        features=np.asarray(features, np.float32),
    )


def sol(n=10, dims=16, seed=0):
    """n images in n/2 pairs of near-duplicates (same direction plus a little noise)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // 2, dims))
    feats = np.repeat(base, 2, axis=0) + 0.01 * rng.normal(size=(n, dims))
    return [pred(f"img{i:02d}.jpg", f, CLASSES[i // 2 % 3]) for i, f in enumerate(feats)]


def test_count_budget_sends_that_many_and_ranks_every_input():
    preds = sol()
    plan = plan_downlink(preds, [1000] * 10, Budget(count=3))
    assert [r.rank for r in plan.rows] == list(range(1, 11))
    assert [r.send for r in plan.rows] == [1, 1, 1] + [0] * 7
    assert sorted(r.path for r in plan.rows) == sorted(p.source for p in preds)
    assert [preds[i].source for i in plan.sent] == [r.path for r in plan.rows[:3]]


def test_fraction_rounds_up_so_every_sol_sends_one():
    assert Budget(fraction=0.25).images(10) == 3
    assert Budget(fraction=0.1).images(3) == 1
    assert Budget(fraction=0.5).images(10) == 5
    plan = plan_downlink(sol(), [10] * 10, Budget(fraction=0.25))
    assert sum(r.send for r in plan.rows) == 3


def test_byte_budget_never_exceeded_and_cumulative_bytes_add_up():
    sizes = [5000, 100, 100, 2000, 300, 300, 4000, 50, 60, 70]
    plan = plan_downlink(sol(), sizes, Budget(bytes=2500))
    sent = [r for r in plan.rows if r.send]
    assert sent and sum(r.bytes for r in sent) <= 2500
    assert [r.send for r in plan.rows] == sorted((r.send for r in plan.rows), reverse=True)  # sent first
    assert [r.cumulative_bytes for r in plan.rows] == list(np.cumsum([r.bytes for r in plan.rows]))


@pytest.mark.parametrize("kw", [{}, {"fraction": 0.2, "count": 3}, {"fraction": 1.5}, {"count": -1}])
def test_exactly_one_budget(kw):
    with pytest.raises(MarsvisionError, match="exactly one budget"):
        Budget(**kw)


def test_near_duplicates_rank_after_the_rest_and_name_their_pick():
    plan = plan_downlink(sol(), [10] * 10, Budget(count=5), params=PlanParams(send_duplicates=False))
    first_five = plan.rows[:5]
    assert all(r.send for r in first_five)
    assert len({r.path[:5] + str(int(r.path[3:5]) // 2) for r in first_five}) == 5  # one of each pair
    by_path = {r.path: r for r in plan.rows}
    for r in plan.rows[5:]:
        assert r.send == 0 and r.reason.startswith("near-duplicate of rank ")
        twin = plan.rows[int(r.reason.rsplit(" ", 1)[1]) - 1]
        assert int(twin.path[3:5]) // 2 == int(r.path[3:5]) // 2  # its pair
        assert by_path[twin.path].rank < r.rank


def test_duplicates_fill_a_budget_only_when_allowed():
    sent = lambda params: sum(r.send for r in plan_downlink(sol(), [10] * 10, Budget(count=8), params=params).rows)  # noqa: E731
    assert sent(PlanParams(send_duplicates=False)) == 5
    assert sent(PlanParams(send_duplicates=True)) == 8


def test_a_novel_image_goes_first_and_says_so():
    preds = sol()
    preds[7].novelty = 3.0
    plan = plan_downlink(preds, [10] * 10, Budget(count=1))
    assert plan.rows[0].path == preds[7].source and plan.rows[0].reason == "novel"


def test_class_weights_raise_a_class():
    preds = sol()
    plain = plan_downlink(preds, [10] * 10, Budget(count=1))
    raised = plan_downlink(preds, [10] * 10, Budget(count=1), weights={"drill holes": 20.0})
    assert plain.rows[0].label != "drill holes"
    assert raised.rows[0].label == "drill holes" and raised.rows[0].reason == "priority class"


def test_what_earth_has_counts_as_covered():
    preds = sol()
    first = plan_downlink(preds, [10] * 10, Budget(count=1))
    top = next(p for p in preds if p.source == first.rows[0].path)
    earth = Earth.seeded(np.stack([top.features, -top.features]), ["a", "b"])
    again = plan_downlink(preds, [10] * 10, Budget(count=1), earth=earth)
    assert again.rows[0].path != top.source


def test_unreadable_inputs_get_a_row_with_their_error_and_are_never_sent():
    preds = sol(4)
    bad = SimpleNamespace(ok=False, error="not an image", source="bad.jpg", features=None)
    plan = plan_downlink([bad, *preds], [7, 10, 10, 10, 10], Budget(fraction=1.0))
    row = next(r for r in plan.rows if r.path == "bad.jpg")
    assert row.send == 0 and row.error == "not an image" and row.reason == "unreadable" and row.rank == 5
    assert sum(r.send for r in plan.rows) == 4  # the budget (all readable images) counts only those


def test_same_inputs_same_plan():
    a = plan_downlink(sol(seed=3), [10] * 10, Budget(count=4))
    b = plan_downlink(sol(seed=3), [10] * 10, Budget(count=4))
    assert [r.to_dict() for r in a.rows] == [r.to_dict() for r in b.rows]

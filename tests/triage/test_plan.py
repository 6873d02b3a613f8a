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


def test_an_image_earth_already_has_covers_nothing_and_goes_last():
    """A frame Earth already has (cosine ≥ on_earth) is never sent, so it must not take the class coverage
    of its sol from an image of its class that can be sent: it ranks after every other image."""
    preds = sol()
    copy = preds[0]
    copy.confidence, copy.probabilities = 0.4, np.array([0.4, 0.3, 0.3], np.float32)  # doubt: a large gain
    earth = Earth.seeded(np.stack([copy.features, -copy.features, preds[4].features * -1]), ["a", "b", "c"])
    plan = plan_downlink(preds, [10] * 10, Budget(count=3), earth=earth)
    on_earth = [r.rank for r in plan.rows if r.reason == "already on Earth"]  # the copy and its twin
    assert copy.source in {plan.rows[k - 1].path for k in on_earth} and len(on_earth) < len(plan.rows)
    assert on_earth == list(range(len(plan.rows) - len(on_earth) + 1, len(plan.rows) + 1))
    assert all(plan.rows[k - 1].send == 0 for k in on_earth)


def test_a_near_duplicate_of_a_rare_class_keeps_more_of_its_gain():
    """Earth holds one drill-holes image and 200 of ground: with ``rare_duplicates`` the second of a
    near-identical pair of drill holes goes before a new ground view; without it, the ground view wins."""
    rng = np.random.default_rng(1)
    earth = Earth.seeded(rng.normal(size=(201, 16)), [f"s{i}" for i in range(201)], ["ground"] * 200 + ["drill holes"])
    drill = rng.normal(size=16)
    feats = [drill, drill + 0.01 * rng.normal(size=16), *rng.normal(size=(4, 16))]
    labels = ["drill holes"] * 2 + ["ground"] * 4
    preds = [pred(f"img{i}.jpg", f, c, confidence=0.98) for i, (f, c) in enumerate(zip(feats, labels, strict=True))]

    def sent(rare_duplicates):
        params = PlanParams(duplicate_discount=0.25, rare_duplicates=rare_duplicates)
        return [r.label for r in plan_downlink(preds, [10] * 6, Budget(count=2), earth, params=params).rows if r.send]

    assert sent(True) == ["drill holes", "drill holes"]
    assert sent(False) == ["drill holes", "ground"]


def test_a_near_duplicate_of_an_image_on_earth_still_covers_its_class():
    """The sol's only wheel image is a near-duplicate (not a copy) of Earth's wheel image: with
    ``earth_duplicate_class`` it still brings the sol's wheel class and is sent before a second ground view."""
    rng = np.random.default_rng(2)
    seed = rng.normal(size=(50, 16))
    earth = Earth.seeded(seed, [f"s{i}" for i in range(50)], ["ground"] * 49 + ["wheel"])
    feats = [*rng.normal(size=(3, 16)), seed[49] + 0.3 * rng.normal(size=16)]
    labels = ["ground"] * 3 + ["wheel"]
    preds = [pred(f"img{i}.jpg", f, c, confidence=0.98) for i, (f, c) in enumerate(zip(feats, labels, strict=True))]

    def plan(flag):
        params = PlanParams(
            duplicate_discount=0.25, earth_duplicate_class=flag, rarity_weight=0.0, uncertainty_weight=0.0
        )
        return plan_downlink(preds, [10] * 4, Budget(count=2), earth, params=params)

    wheel = next(r for r in plan(True).rows if r.label == "wheel")
    assert wheel.send == 1 and wheel.reason == "near-duplicate of an image on Earth"
    assert [r.label for r in plan(False).rows if r.send] == ["ground", "ground"]


def test_class_decay_spreads_the_bonuses_over_classes():
    """Three doubtful ground images (a large bonus each) and one sure wheel image, distinct views: without
    per-class decay the doubt sends two ground images; with it, the second ground image's bonus shrinks and
    the wheel image goes instead."""
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(4, 16))
    preds = [pred(f"img{i}.jpg", feats[i], "ground", confidence=0.5) for i in range(3)]
    for p in preds:  # torn between ground and drill holes, never wheel
        p.probabilities = np.array([0.5, 0.0, 0.5], np.float32)
    preds.append(pred("img3.jpg", feats[3], "wheel", confidence=0.98))

    def sent(decay):
        params = PlanParams(class_decay=decay)
        return sorted(r.label for r in plan_downlink(preds, [10] * 4, Budget(count=2), params=params).rows if r.send)

    assert sent(0.0) == ["ground", "ground"]
    assert sent(20.0) == ["ground", "wheel"]


def test_doubt_as_entropy_prefers_a_spread_over_a_two_way_split():
    """A: torn between two classes (1 − confidence 0.45, entropy 0.63 of log 3); B: surer of its top class
    but spread over all three (0.40, 0.87). The doubt as 1 − confidence sends A first; as entropy, B."""
    rng = np.random.default_rng(4)
    a, b = pred("a.jpg", rng.normal(size=16), "wheel", confidence=0.55), pred("b.jpg", rng.normal(size=16))
    a.probabilities = np.array([0.45, 0.55, 0.0], np.float32)
    b.confidence, b.probabilities = 0.6, np.array([0.6, 0.2, 0.2], np.float32)

    def first(entropy):
        params = PlanParams(doubt_entropy=entropy, uncertainty_weight=50.0)
        return plan_downlink([a, b], [10, 10], Budget(count=1), params=params).rows[0].path

    assert first(False) == "a.jpg"
    assert first(True) == "b.jpg"

import pytest

from marsvision.metrics import classification_metrics, format_table


def test_hand_computed_case():
    # true: a a b b c ; pred: a b b b a  (class c never predicted, so union = {a, b, c})
    names = ["a", "b", "c", "d"]
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], names)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: P=0 R=0 F=0 → macro 1.3/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 0) / 5)
    assert [r["class"] for r in m["per_class"]] == ["a", "b", "c"]  # d absent from both sides
    assert m["per_class"][1]["precision"] == pytest.approx(2 / 3)
    assert "macro-F1 0.4333" in format_table(m)


def test_macro_uses_union_with_predicted_only_labels():
    m = classification_metrics([0, 0], [0, 1], ["x", "y"])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)

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


@pytest.mark.parametrize("seed", range(5))
def test_matches_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    import numpy as np

    from marsvision.metrics import full_confusion_matrix, most_confused_pairs

    rng = np.random.default_rng(seed)
    n_classes = 12
    y_true = rng.integers(0, 9, size=300)  # classes 9-11 only ever predicted, some never seen at all
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, n_classes, size=300))
    names = [f"c{i}" for i in range(n_classes)]
    m = classification_metrics(y_true, y_pred, names)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted", zero_division=0))
    labels = np.union1d(y_true, y_pred)
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert [row["class"] for row in m["per_class"]] == [names[c] for c in labels]
    np.testing.assert_allclose([row["precision"] for row in m["per_class"]], p)
    np.testing.assert_allclose([row["recall"] for row in m["per_class"]], r)
    np.testing.assert_allclose([row["f1"] for row in m["per_class"]], f)
    assert [row["support"] for row in m["per_class"]] == s.tolist()
    cm = full_confusion_matrix(y_true, y_pred, n_classes)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)))
    report = pytest.importorskip("marsvision.evaluation.report")
    assert most_confused_pairs(cm, names, k=15) == report.most_confused_pairs(cm, names, k=15)


def test_bootstrap_matches_a_plain_loop_and_pairs_the_resamples():
    import numpy as np

    from marsvision.metrics import bootstrap_ci

    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 80)
    a = np.where(rng.random(80) < 0.7, y, rng.integers(0, 7, 80))  # label 6 only ever predicted
    b = np.where(rng.random(80) < 0.5, y, rng.integers(0, 6, 80))
    ci = bootstrap_ci(y, a, baseline=b, n_boot=50, seed=3)
    # The same resamples, scored one by one with classification_metrics (the scikit-learn-checked path).
    idx = np.random.default_rng(3).integers(0, 80, size=(50, 80), dtype=np.int32)
    names = [str(i) for i in range(7)]
    acc = [classification_metrics(y[i], a[i], names)["accuracy"] for i in idx]
    mf1 = [classification_metrics(y[i], a[i], names)["macro_f1"] for i in idx]
    diff = [m - classification_metrics(y[i], b[i], names)["macro_f1"] for m, i in zip(mf1, idx, strict=True)]
    assert ci["accuracy"] == pytest.approx(list(np.percentile(acc, [2.5, 97.5])))
    assert ci["macro_f1"] == pytest.approx(list(np.percentile(mf1, [2.5, 97.5])))
    assert ci["macro_f1_diff"] == pytest.approx(list(np.percentile(diff, [2.5, 97.5])))
    assert ci["macro_f1"][0] <= classification_metrics(y, a, names)["macro_f1"] <= ci["macro_f1"][1]
    with pytest.raises(ValueError):
        bootstrap_ci(y, a[:10])


def test_paired_scores_are_the_metrics_and_the_paired_intervals():
    from marsvision.metrics import bootstrap_ci, paired_scores

    y, pred, base = [0, 1, 2, 2, 1, 0, 2], [0, 1, 2, 1, 1, 0, 2], [0, 2, 2, 1, 1, 1, 2]
    sc = paired_scores(y, pred, base, ["a", "b", "c"])
    m, ci = classification_metrics(y, pred, ["a", "b", "c"]), bootstrap_ci(y, pred, baseline=base)
    assert sc == {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "accuracy_diff": ci["accuracy_diff"],
        "macro_f1_diff": ci["macro_f1_diff"],
    }

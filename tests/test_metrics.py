"""Metrics against hand computations, and the baselines' predictions."""

import math

import numpy as np
import pytest

from merx.baselines import Targets, compute_baselines, majority_quadrant, quadrant_centre_va, random_va
from merx.data.songs import HOLE, Song
from merx.metrics import (
    METRICS,
    classification_metrics,
    confusion_matrix,
    higher_is_better,
    metric,
    metric_names,
    metrics_for,
    mode_for,
    monitors,
    quadrant_indices,
    regression_metrics,
)

# columns: valence, arousal. Implied quadrants: true Q2 Q1 Q3 Q4, predicted Q2 Q1 Q3 Q3.
Y_TRUE = [[0.2, 0.8], [0.7, 0.9], [0.1, 0.3], [0.9, 0.2]]
Y_PRED = [[0.3, 0.7], [0.6, 0.6], [0.2, 0.1], [0.4, 0.3]]


def test_regression_metrics_match_hand_computation():
    m = regression_metrics(Y_TRUE, Y_PRED)
    # valence errors -0.1, 0.1, -0.1, 0.5
    assert m["valence_mae"] == pytest.approx(0.8 / 4)
    assert m["valence_mse"] == pytest.approx(0.28 / 4)
    # mean true valence 0.475; SS_tot = .075625 + .050625 + .140625 + .180625 = .4475
    assert m["valence_r2"] == pytest.approx(1 - 0.28 / 0.4475)
    # population moments: var_t .111875, var_p .021875, cov .036875, mean gap 0.1
    assert m["valence_ccc"] == pytest.approx(2 * 0.036875 / (0.111875 + 0.021875 + 0.01))
    # arousal errors 0.1, 0.3, 0.2, -0.1
    assert m["arousal_mae"] == pytest.approx(0.7 / 4)
    assert m["arousal_mse"] == pytest.approx(0.15 / 4)
    # implied quadrants: 3 of 4 right; F1 Q1 = 1, Q2 = 1, Q3 = 2/3 (one false positive), Q4 = 0
    assert m["quadrant_accuracy"] == pytest.approx(0.75)
    assert m["quadrant_macro_f1"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert set(m) == set(metric_names("regression"))


def test_perfect_and_constant_predictions():
    m = regression_metrics(Y_TRUE, Y_TRUE)
    assert m["valence_r2"] == 1.0 and m["arousal_ccc"] == pytest.approx(1.0) and m["valence_mae"] == 0.0
    # CCC penalises a constant offset that Pearson's r would ignore
    shifted = np.asarray(Y_TRUE) + 0.1
    assert regression_metrics(Y_TRUE, shifted)["valence_ccc"] == pytest.approx(2 * 0.111875 / (2 * 0.111875 + 0.01))
    # R² is undefined when the truth is constant: nan, not a made-up number
    flat = [[0.3, 0.3]] * 3
    assert math.isnan(regression_metrics(flat, [[0.2, 0.1]] * 3)["valence_r2"])


def test_regression_metrics_reject_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        regression_metrics([0.1, 0.2], [0.1, 0.2])


def test_quadrant_thresholds_follow_quadrant_of():
    assert quadrant_indices([[0.5, 0.5], [0.49, 0.5], [0.49, 0.49], [0.5, 0.49]]).tolist() == [0, 1, 2, 3]


def test_classification_metrics_with_a_class_absent():
    true, pred = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    m = classification_metrics(true, pred)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1_Q1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # tp 1, fp 1, fn 1
    assert m["f1_Q2"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1
    # Q3, Q4 never occur: undefined, and left out of the macro average (as scikit-learn does)
    assert math.isnan(m["f1_Q3"]) and math.isnan(m["f1_Q4"])
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert set(m) == set(metric_names("classification"))


def test_a_predicted_but_never_true_class_counts_as_zero():
    m = classification_metrics([0, 0, 1, 1], [0, 2, 1, 1])
    assert m["f1_Q3"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_confusion_matrix_rows_are_true_columns_predicted():
    expected = [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]) == expected
    assert confusion_matrix(["Q1", "Q1", "Q2", "Q2", "Q2"], ["Q1", "Q2", "Q2", "Q2", "Q1"]) == expected
    with pytest.raises(ValueError, match="Q5"):
        confusion_matrix(["Q5"], ["Q1"])
    with pytest.raises(ValueError, match="0..3"):
        classification_metrics([4], [0])


# -- baselines ------------------------------------------------------------------------------

def _train_targets():
    va = np.array([[0.8, 0.8], [0.9, 0.7],      # Q1, centre (0.85, 0.75)
                   [0.2, 0.9],                  # Q2, centre (0.2, 0.9)
                   [0.1, 0.1], [0.3, 0.2], [0.2, 0.3],  # Q3, centre (0.2, 0.2) — the majority
                   [0.7, 0.1]])                 # Q4, centre (0.7, 0.1)
    return Targets(va, quadrant_indices(va))


def test_quadrant_centre_predicts_the_training_mean_of_the_true_quadrant():
    train = _train_targets()
    test = Targets(np.array([[0.95, 0.65], [0.05, 0.35], [0.65, 0.15]]), np.array([0, 2, 3]))
    pred = quadrant_centre_va(train, test, None)
    np.testing.assert_allclose(pred, [[0.85, 0.75], [0.2, 0.2], [0.7, 0.1]])
    # test songs sitting exactly on the centres: the oracle scores MAE 0, the mean predictor does not
    on_centres = Targets(pred.copy(), test.quadrant)
    scores = compute_baselines(train, on_centres, "regression", seed=0)
    assert scores["quadrant_centre"]["valence_mae"] == pytest.approx(0.0)
    assert scores["mean"]["valence_mae"] > 0.1
    assert set(scores) == {"mean", "quadrant_centre", "random", "majority"}


def test_mean_and_majority_baselines():
    train = _train_targets()
    test = Targets(np.array([[0.8, 0.8], [0.2, 0.2]]), np.array([0, 2]))
    scores = compute_baselines(train, test, "regression", seed=0)
    mean = train.va.mean(axis=0)
    assert scores["mean"]["valence_mae"] == pytest.approx(np.mean(np.abs(test.va[:, 0] - mean[0])))
    # majority = Q3 (3 of 7 training songs); for regression it predicts Q3's centre (0.2, 0.2)
    assert majority_quadrant(train) == 2
    assert scores["majority"]["valence_mae"] == pytest.approx((0.6 + 0.0) / 2)
    assert scores["majority"]["quadrant_accuracy"] == pytest.approx(0.5)


def test_majority_classifier_is_the_most_frequent_training_class():
    train = Targets(None, np.array([3, 1, 1, 0, 1, 3]))
    test = Targets(None, np.array([1, 1, 0, 2]))
    scores = compute_baselines(train, test, "classification", seed=0)
    assert majority_quadrant(train) == 1
    assert scores["majority"]["accuracy"] == pytest.approx(0.5)
    assert set(scores) == {"majority", "random"}
    with pytest.raises(ValueError, match="valence/arousal"):
        compute_baselines(train, test, "regression", seed=0)
    # plain (va, quadrant) tuples work too; NaN V/A do not matter for classification
    nan_va = [[np.nan, np.nan]] * 4
    again = compute_baselines((nan_va[:3] * 2, [3, 1, 1, 0, 1, 3]), (nan_va, [1, 1, 0, 2]), "classification", seed=0)
    assert {k: v["accuracy"] for k, v in again.items()} == {k: v["accuracy"] for k, v in scores.items()}
    with pytest.raises(ValueError, match="valence/arousal"):
        compute_baselines((nan_va[:3] * 2, [3, 1, 1, 0, 1, 3]), (nan_va, [1, 1, 0, 2]), "regression", seed=0)


def test_random_never_falls_in_the_hole_and_is_seeded():
    train = _train_targets()
    test = Targets(np.zeros((20000, 2)), np.zeros(20000, dtype=int))
    pred = random_va(train, test, np.random.default_rng(1))
    lo, hi = HOLE
    assert not np.any((pred >= lo) & (pred <= hi))
    assert pred.min() >= 0.0 and pred.max() <= 1.0
    # both sides of the hole, about evenly
    assert 0.45 < np.mean(pred < lo) < 0.55
    again = random_va(train, test, np.random.default_rng(1))
    np.testing.assert_array_equal(pred, again)
    small = Targets(np.array([[0.8, 0.8], [0.2, 0.2], [0.1, 0.9]]), np.array([0, 2, 1]))
    assert compute_baselines(train, small, "regression", 5) == compute_baselines(train, small, "regression", 5)
    assert compute_baselines(train, small, "regression", 5)["random"] != \
        compute_baselines(train, small, "regression", 6)["random"]


def test_targets_from_songs():
    songs = [Song("a", "train", "Q2", 0.2, 0.8), Song("b", "train", "Q4", 0.7, 0.3)]
    t = Targets.from_songs(songs)
    assert t.quadrant.tolist() == [1, 3] and t.va.tolist() == [[0.2, 0.8], [0.7, 0.3]]
    assert Targets.from_songs([Song("c", "test", "Q1")]).va is None


# -- the registry ---------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["regression", "classification"])
def test_every_computed_metric_is_registered_for_its_task(task):
    for name in metric_names(task):
        assert name in METRICS and METRICS[name].task == task, name
    assert [m.name for m in metrics_for(task)] == metric_names(task)
    assert monitors(task) == ["val_loss"] + [f"val_{n}" for n in metric_names(task)]


def test_directions():
    assert higher_is_better("macro_f1") is True
    assert higher_is_better("valence_mae") is False
    assert higher_is_better("val_loss") is False
    assert higher_is_better("arousal_ccc") is True and higher_is_better("test_valence_r2") is True
    assert mode_for("val_macro_f1") == "max" and mode_for("val_loss") == "min" and mode_for("train_loss") == "min"
    assert metric("VAL_F1_q2").name == "f1_Q2"


def test_timings_are_lower_better_and_not_per_song():
    timings = [m for m in METRICS.values() if "seconds" in m.name]
    assert {"epoch_seconds", "wall_seconds"} <= {m.name for m in timings}
    assert all(m.higher_is_better is False and not m.per_song for m in timings)


def test_unknown_metrics_are_none():
    for name in ("lr_audio", "grad_norm_pre_clip", "val_nonsense", "best_epoch", ""):
        assert metric(name) is None and higher_is_better(name) is None and mode_for(name) is None


def test_regression_baselines_group_songs_by_the_quadrant_their_va_imply_not_the_label():
    # Training: two Q1 songs by label and V/A; one song labelled Q1 whose V/A imply Q2.
    train = Targets(np.array([[0.8, 0.8], [0.9, 0.7], [0.2, 0.9]]), np.array([0, 0, 0]))
    # Test: labelled Q1 but V/A imply Q2, the same disagreement the model's metrics resolve by V/A.
    test = Targets(np.array([[0.2, 0.8]]), np.array([0]))
    scores = compute_baselines(train, test, "regression")
    # By V/A, training Q2's centre is (0.2, 0.9): the oracle's MAE is 0.05 (arousal 0.1, valence 0).
    assert scores["quadrant_centre"]["va_mae"] == pytest.approx(0.05)
    # And its implied-quadrant score agrees with the truth the model is scored against.
    assert scores["quadrant_centre"]["quadrant_accuracy"] == 1.0
    # Majority by V/A is Q1 (two songs) -> centre (0.85, 0.75); implied quadrant Q1, truth Q2.
    assert scores["majority"]["quadrant_accuracy"] == 0.0


def test_label_notes_count_disagreeing_labels_and_values_in_the_hole():
    from merx.data.songs import SongTable, label_notes

    agree = Song(id="a", split="train", quadrant="Q1", valence=0.8, arousal=0.9)
    disagree = Song(id="d", split="test", quadrant="Q1", valence=0.2, arousal=0.9)
    hole = Song(id="h", split="train", quadrant="Q1", valence=0.55, arousal=0.9)
    no_va = Song(id="n", split="train", quadrant="Q3")
    assert label_notes(agree) == {} and label_notes(no_va) == {}
    assert label_notes(disagree) == {"label_disagrees": "label Q1, V/A (0.2, 0.9) imply Q2"}
    assert set(label_notes(hole)) == {"in_hole"}  # 0.55 >= 0.5 still implies Q1: no disagreement
    notes = SongTable([agree, disagree, hole, no_va]).notes()
    assert [sid for sid, _ in notes["label_disagrees"]] == ["d"] and [sid for sid, _ in notes["in_hole"]] == ["h"]

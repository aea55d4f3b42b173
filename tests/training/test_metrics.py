import numpy as np
import pytest
import torch

from worker.training.losses import authors_dice_loss, get_loss, soft_dice_loss
from worker.training.metrics import confusion_counts, slice_metrics, summarize


def _counts(pred, truth):
    p = torch.tensor(pred, dtype=torch.float32)[None]
    t = torch.tensor(truth, dtype=torch.float32)[None]
    return confusion_counts(p, t).numpy()


def test_confusion_counts_by_hand():
    pred = [[0.9, 0.9], [0.1, 0.6]]
    truth = [[1, 0], [1, 1]]
    assert _counts(pred, truth).tolist() == [[2, 1, 1, 0]]  # TP FP FN TN


def test_standard_metrics_hand_made():
    c = np.array([[2, 1, 1, 0]])
    m = slice_metrics(c)
    assert m["sensitivity"][0] == pytest.approx(2 / 3)
    assert m["specificity"][0] == pytest.approx(0.0)  # TN=0, FP=1
    assert m["dice"][0] == pytest.approx(4 / 6)


def test_empty_truth_and_empty_prediction_standard():
    empty_both = np.array([[0, 0, 0, 10]])
    m = slice_metrics(empty_both)
    assert [m[k][0] for k in ("sensitivity", "specificity", "dice")] == [1.0, 1.0, 1.0]
    # ground truth empty, prediction not: Dice 0, sensitivity 0/0 -> 1
    fp_only = np.array([[0, 3, 0, 7]])
    m = slice_metrics(fp_only)
    assert m["dice"][0] == 0.0 and m["sensitivity"][0] == 1.0
    assert m["specificity"][0] == pytest.approx(0.7)
    # prediction empty, truth not: Dice 0, sensitivity 0
    fn_only = np.array([[0, 0, 4, 6]])
    m = slice_metrics(fn_only)
    assert m["dice"][0] == 0.0 and m["sensitivity"][0] == 0.0 and m["specificity"][0] == 1.0


def test_authors_2020_mode_scores_empty_truth_as_one():
    fp_only = np.array([[0, 3, 0, 7]])  # empty truth, spurious prediction
    m = slice_metrics(fp_only, "authors-2020")
    assert [m[k][0] for k in ("sensitivity", "specificity", "dice")] == [1.0, 1.0, 1.0]
    # empty prediction, non-empty truth: the rule does not fire
    fn_only = np.array([[0, 0, 4, 6]])
    m = slice_metrics(fn_only, "authors-2020")
    assert m["dice"][0] == pytest.approx(0.0)
    # "sensitivity" is precision, "specificity" is NPV
    c = np.array([[6, 2, 4, 88]])
    m = slice_metrics(c, "authors-2020")
    assert m["sensitivity"][0] == pytest.approx(6 / 8, abs=1e-5)
    assert m["specificity"][0] == pytest.approx(88 / 92, abs=1e-5)


def test_summary_means_in_percent_and_pooled():
    c = np.array([[1, 0, 1, 2], [0, 0, 0, 4]])
    s = summarize(c)
    assert s["dice"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert s["pooled_dice"] == pytest.approx(100 * 2 / 3)
    assert s["dice_std"] == pytest.approx(100 * np.std([2 / 3, 1]))
    inflated = summarize(np.array([[1, 0, 1, 2], [0, 5, 0, 0]]), "authors-2020")
    standard = summarize(np.array([[1, 0, 1, 2], [0, 5, 0, 0]]))
    assert inflated["dice"] > standard["dice"]


def test_soft_dice_paper_formula():
    p = torch.tensor([0.5, 1.0, 0.0, 0.25])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = 1 - 2 * 1.5 / (2 + (0.25 + 1 + 0 + 0.0625) + 1e-5)
    assert float(soft_dice_loss(p, y)) == pytest.approx(expected, rel=1e-6)
    assert float(soft_dice_loss(y, y)) == pytest.approx(0.0, abs=1e-5)


def test_authors_dice_formula():
    p = torch.tensor([0.5, 1.0, 0.0, 0.25])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    tp, fp, fn = 1.5, 0.25, 0.5
    assert float(authors_dice_loss(p, y)) == pytest.approx(
        1 - (2 * tp + 1) / (2 * tp + fp + fn + 1)
    )
    with pytest.raises(ValueError, match="Unknown loss"):
        get_loss("focal")

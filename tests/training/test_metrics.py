import numpy as np
import pytest
import torch

from db.protocol import METRIC_EPS, Protocol
from worker.training.losses import (
    authors_2020_dice_loss,
    get_loss,
    smp_legacy_dice_loss,
    soft_dice_loss,
    soft_dice_per_image_loss,
)
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


def test_smp_legacy_dice_formula():
    p = torch.tensor([0.5, 1.0, 0.0, 0.25])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    tp, fp, fn = 1.5, 0.25, 0.5
    assert float(smp_legacy_dice_loss(p, y)) == pytest.approx(
        1 - (2 * tp + 1) / (2 * tp + fp + fn + 1)
    )
    with pytest.raises(ValueError, match="Unknown loss"):
        get_loss("focal")


def _lesion_and_empty_batch():
    """Two 2x2 slices (N, 1, H, W): one with a lesion, one with an empty target."""
    pred = torch.tensor([[0.5, 1.0], [0.0, 0.25], [0.2, 0.1], [0.0, 0.0]]).reshape(2, 1, 2, 2)
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]).reshape(2, 1, 2, 2)
    return pred, target


def test_the_four_losses_on_a_lesion_slice_and_an_empty_slice_by_hand():
    """Hand-computed: slice A has TP = 1.5, sum Y = 2, sum P = 1.75, sum P^2 = 1.3125;
    slice B has an empty target, sum P = 0.3, sum P^2 = 0.05."""
    pred, target = _lesion_and_empty_batch()
    # authors' 2020 code: per slice 1 - 2TP/(sum Y + sum P + 1e-6), 0 for B, batch mean
    a_2020 = 1 - 2 * 1.5 / (2 + 1.75 + 1e-6)
    assert float(authors_2020_dice_loss(pred, target)) == pytest.approx((a_2020 + 0) / 2)
    # smp legacy (authors' 2021 code): over the batch, TP 1.5, FP 0.55, FN 0.5
    legacy = 1 - (2 * 1.5 + 1) / (2 * 1.5 + 0.55 + 0.5 + 1)
    assert float(smp_legacy_dice_loss(pred, target)) == pytest.approx(legacy)
    # paper text, batch sums and per image
    batch = 1 - 2 * 1.5 / (2 + 1.3125 + 0.05 + 1e-5)
    assert float(soft_dice_loss(pred, target)) == pytest.approx(batch)
    per_image = ((1 - 2 * 1.5 / (2 + 1.3125 + 1e-5)) + (1 - 0 / (0.05 + 1e-5))) / 2
    assert float(soft_dice_per_image_loss(pred, target)) == pytest.approx(per_image)
    # the readings really differ on this batch
    values = [a_2020 / 2, legacy, batch, per_image]
    assert len({round(v, 3) for v in values}) == 4


def test_authors_2020_loss_is_zero_for_empty_targets_and_has_gradients():
    pred = torch.full((2, 1, 4, 4), 0.3, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4)
    loss = authors_2020_dice_loss(pred, target)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    # a perfect prediction of a lesion slice scores ~0 too
    y = torch.zeros(1, 1, 4, 4)
    y[..., :2, :2] = 1
    assert float(authors_2020_dice_loss(y, y)) == pytest.approx(0.0, abs=1e-6)


def test_deprecated_authors_dice_name_maps_to_smp_legacy_dice():
    assert get_loss("authors-dice") is smp_legacy_dice_loss
    assert Protocol(loss="authors-dice").loss == "smp-legacy-dice"
    stored = {**Protocol().to_dict(), "loss": "authors-dice"}
    assert Protocol.from_dict(stored) == Protocol(loss="smp-legacy-dice")


def test_authors_2020_metric_eps_is_1e_6():
    """The 2020 code's denominators carry 1e-6 (the standard mode's ratios are exact)."""
    assert METRIC_EPS == {"standard": 0.0, "authors-2020": 1e-6, "paper-text": 1e-5}
    c = np.array([[1, 0, 1, 2]])  # Dice 2/3 without eps
    dice = slice_metrics(c, "authors-2020")["dice"][0]
    assert dice == pytest.approx(2 / (3 + 1e-6), abs=1e-15)
    assert abs(dice - 2 / (3 + 1e-5)) > 1e-7
    assert slice_metrics(c)["dice"][0] == 2 / 3


def paper_text_by_hand(tp, fp, fn, tn):
    """The paper's text, transcribed literally: Sensitivity TP/(TP+FN), specificity
    TN/(TN+FP), Dice 2TP/(2TP+FP+FN), each with eps = 1e-5; 'when TP+FP=0 all metrics
    are set to 1'."""
    eps = 1e-5
    if tp + fp == 0:
        return 1.0, 1.0, 1.0
    return tp / (tp + fn + eps), tn / (tn + fp + eps), 2 * tp / (2 * tp + fp + fn + eps)


def test_paper_text_mode_follows_the_text_and_rewards_an_empty_prediction():
    """Checked slice by slice against the literal transcription above, on every kind of
    slice: a missed lesion (nothing predicted) scores 1 under the text, 0 in standard."""
    counts = np.array(
        [
            [5, 2, 3, 90],  # an ordinary slice
            [0, 0, 7, 93],  # a missed lesion: nothing predicted
            [0, 0, 0, 100],  # both empty
            [0, 4, 0, 96],  # a false positive on an empty slice
            [9, 0, 0, 91],  # perfect
        ]
    )
    m = slice_metrics(counts, "paper-text")
    for i, row in enumerate(counts):
        want = paper_text_by_hand(*(int(v) for v in row))
        got = (m["sensitivity"][i], m["specificity"][i], m["dice"][i])
        assert got == pytest.approx(want, rel=1e-12), (row, got, want)
    assert slice_metrics(counts[1:2])["dice"][0] == 0.0
    assert m["dice"][1] == 1.0
    assert summarize(counts, "paper-text")["dice"] > summarize(counts)["dice"]

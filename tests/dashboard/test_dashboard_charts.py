"""Chart builders and array helpers on small hand-made frames."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dashboard import arrays
from dashboard.data import filters_key, unpack_mask
from worker.results import charts
from worker.results.density import density_grid, gaussian_kde_2d


def spec(chart) -> dict:
    return chart.to_dict()  # also validates against the Vega-Lite schema


def rows(chart_dict: dict) -> list[dict]:
    datasets = chart_dict["datasets"]
    assert len(datasets) == 1
    return next(iter(datasets.values()))


def runs_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = []
    for experiment in ("lung-segmentation", "lesion-segmentation-a"):
        for architecture in ("unet", "fpn"):
            for encoder, params in (("resnet18", 14.3), ("vgg11", 18.8)):
                for init in ("random", "imagenet"):
                    records.append(
                        {
                            "experiment": experiment,
                            "architecture": architecture,
                            "encoder": encoder,
                            "init": init,
                            "parameters_m": params + rng.normal(),
                            "dice": 85 + rng.normal(),
                        }
                    )
    return pd.DataFrame(records)


def test_loss_curves_one_line_per_run_and_split():
    curves = pd.DataFrame(
        {
            "label": ["#1"] * 3 + ["#2"] * 3,
            "epoch": [1, 2, 3] * 2,
            "train_loss": [0.9, 0.5, 0.3, 0.8, np.nan, 0.4],
            "val_loss": [1.0, 0.6, 0.4, 0.9, 0.7, np.inf],
        }
    )
    clean = arrays.finite_losses(curves)
    assert clean.attrs["non_finite"] == 2
    d = spec(charts.loss_curves(clean))
    lines, dots = d["layer"]
    assert (lines["mark"]["type"], dots["mark"]["type"]) == ("line", "circle")
    enc = lines["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"]) == ("epoch", "loss")
    assert enc["color"]["field"] == "label" and enc["strokeDash"]["field"] == "split"
    # the split legend draws grey dashed strokes: readable on the light and dark theme
    legend = enc["strokeDash"]["legend"]
    assert legend["symbolType"] == "stroke" and legend["symbolStrokeColor"] == charts.NEUTRAL
    assert "strokeDash" not in dots["encoding"]  # a point overlay would make it black dots
    data = rows(d)
    assert len(data) == 12
    assert {r["split"] for r in data} == {"train", "validation"}
    assert sum(r["loss"] is None for r in data) == 2  # gaps, not NaN


def test_dice_boxplot_per_architecture_per_experiment():
    d = spec(charts.dice_boxplot(runs_frame()))
    assert d["facet"]["column"]["field"] == "experiment"
    inner = d["spec"]
    assert inner["mark"]["type"] == "boxplot"
    assert inner["encoding"]["x"]["field"] == "architecture"
    assert inner["encoding"]["y"]["field"] == "dice"
    assert len(rows(d)) == 16


def test_init_boxplot_offsets_random_and_imagenet():
    d = spec(charts.init_boxplot(runs_frame()))
    enc = d["spec"]["encoding"]
    assert enc["xOffset"]["field"] == "init" and enc["color"]["field"] == "init"
    assert enc["color"]["scale"]["domain"] == ["random", "imagenet"]


def test_dice_vs_parameters_over_a_density():
    runs = runs_frame()
    density = density_grid(runs["parameters_m"], runs["dice"], size=10)
    assert len(density) == 100 and (density["density"] > 0).all()
    d = spec(charts.dice_vs_parameters(runs, density))
    marks = [layer["mark"]["type"] for layer in d["layer"]]
    assert marks == ["rect", "circle"]
    assert d["layer"][1]["encoding"]["x"]["field"] == "parameters_m"
    assert d["layer"][1]["encoding"]["color"]["field"] == "architecture"
    assert d["resolve"]["scale"]["color"] == "independent"
    # the density is a grey of growing opacity (transparent where empty: no bright box
    # on the dark theme), with a legend of its own
    background = d["layer"][0]
    assert background["mark"]["color"] == charts.NEUTRAL and "color" not in background["encoding"]
    assert background["encoding"]["opacity"]["scale"]["range"][0] == 0.0
    assert background["encoding"]["opacity"]["legend"]["title"] == "density of models (KDE)"
    empty = spec(charts.dice_vs_parameters(runs, density_grid([1, 1], [2, 2])))
    assert [layer["mark"]["type"] for layer in empty["layer"]] == ["circle"]


def test_density_matches_scipy_gaussian_kde():
    from scipy.stats import gaussian_kde

    rng = np.random.default_rng(3)
    points = np.vstack([rng.normal(20, 8, 50), rng.normal(90, 2, 50) + rng.normal(0, 1, 50)])
    at = np.vstack([rng.uniform(0, 40, 30), rng.uniform(85, 95, 30)])
    expected = gaussian_kde(points)(at)
    assert np.allclose(gaussian_kde_2d(points, at), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "x,y",
    [([], []), ([1.0, 2.0], [3.0, 4.0]), ([1, 1, 1, 1], [1, 2, 3, 4]), ([1, 2, 3], [1, 2, 3])],
)
def test_density_grid_is_empty_when_no_density_exists(x, y):
    assert density_grid(x, y).empty


def test_loss_bands_mean_line_and_std_band():
    bands = pd.DataFrame(
        {
            "architecture": ["unet"] * 3 + ["fpn"] * 3,
            "epoch": [1, 2, 3] * 2,
            "n": [2] * 6,
            "train_mean": [0.9, 0.6, 0.4, 0.8, 0.5, 0.3],
            "train_std": [0.1, 0.1, None, 0.1, 0.1, 0.1],
            "val_mean": [1.0, 0.7, 0.5, 0.9, 0.6, 0.4],
            "val_std": [0.1] * 6,
        }
    )
    d = spec(charts.loss_bands(bands))
    assert d["facet"]["column"]["field"] == "split"
    layers = d["spec"]["layer"]
    assert [layer["mark"]["type"] for layer in layers] == ["area", "line"]
    assert layers[0]["encoding"]["y2"]["field"] == "high"
    # one colour legend (shared by band and line) that says what line and band are
    legends = [layer["encoding"]["color"]["legend"] for layer in layers]
    assert legends[0] == legends[1]  # one legend: a layer without one would hide it
    assert legends[0]["title"] == ["architecture", "line: mean", "band: ± 1 std"]
    assert legends[0]["symbolOpacity"] == 1
    data = rows(d)
    assert len(data) == 12
    single = next(r for r in data if r["split"] == "train" and r["epoch"] == 3)
    assert single["low"] == single["high"] == 0.4  # one run: no band


def test_loss_difference_has_a_zero_rule():
    diff = pd.DataFrame(
        {
            "architecture": ["unet", "unet"],
            "epoch": [1, 2],
            "split": ["train", "validation"],
            "difference": [-0.02, 0.01],
        }
    )
    d = spec(charts.loss_difference(diff))
    marks = [layer["mark"]["type"] for layer in d["spec"]["layer"]]
    assert marks == ["rule", "line"]


def test_mean_dice_by_group_best_first():
    agg = pd.DataFrame(
        {"encoder": ["vgg11", "resnet18"], "n": [4, 4], "mean": [85.0, 86.0], "std": [1.0, None]}
    )
    d = spec(charts.mean_dice_bars(agg, "encoder"))
    dots = d["layer"][1]
    assert dots["mark"]["type"] == "circle"
    assert dots["encoding"]["y"]["sort"] == {"field": "mean", "order": "descending"}
    data = rows(d)
    assert [(r["low"], r["high"]) for r in data] == [(84.0, 86.0), (86.0, 86.0)]


def test_intensity_histograms_log_scale_without_empty_bins():
    split = SimpleNamespace(
        images=np.array([[[-1.0, -1.0], [0.5, 2.0]]], dtype=np.float32),
        masks=np.array([[[1, 0], [1, 0]]], dtype=np.uint8),
    )
    hist = arrays.intensity_histogram({"train": split})
    assert hist.groupby("pixels")["count"].sum().to_dict() == {"image": 4, "masked": 2}
    d = spec(charts.intensity_histograms(hist))
    assert d["spec"]["encoding"]["y"]["scale"]["type"] == "log"
    assert all(r["count"] > 0 for r in rows(d))
    assert len(rows(d)) == 3 + 2  # bins holding pixels: 3 image, 2 masked


def test_overlay_colours_correct_green_and_wrong_red():
    image = np.zeros((4, 4), dtype=np.float32)
    truth = np.zeros((4, 4), dtype=np.uint8)
    truth[0, :2] = 1
    predicted = np.zeros((4, 4), dtype=np.uint8)
    predicted[0, 0] = 1  # true positive
    predicted[3, 3] = 1  # false positive; truth[0, 1] is a false negative
    rgb = arrays.overlay(image, truth, predicted)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    green, red = rgb[0, 0], rgb[3, 3]
    assert green[1] > green[0] and red[0] > red[1]
    assert (rgb[0, 1] == red).all()
    plain = arrays.grey(image)[1, 1]
    assert (rgb[1, 1] == plain).all()
    truth_only = arrays.overlay(image, truth)
    assert truth_only[0, 1, 1] > truth_only[0, 1, 0]


def test_overlay_offers_a_colour_blind_safe_palette():
    """Blue / orange (Okabe-Ito) instead of green / red, same rule: right pixels inside
    the target in the first colour, every wrong pixel in the second."""
    image = np.zeros((2, 2), dtype=np.float32)
    truth = np.array([[1, 1], [0, 0]], dtype=np.uint8)
    predicted = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    safe = next(p for p in arrays.PALETTES if "colour-blind" in p)
    rgb = arrays.overlay(image, truth, predicted, palette=safe).astype(int)
    right, wrong = (np.array(c) for c in arrays.PALETTES[safe])
    plain = arrays.grey(image)[1, 0].astype(int)
    alpha = arrays.OVERLAY_ALPHA
    assert np.abs(rgb[0, 0] - ((1 - alpha) * plain + alpha * right)).max() <= 1
    for wrong_pixel in (rgb[0, 1], rgb[1, 1]):  # a false negative, a false positive
        assert np.abs(wrong_pixel - ((1 - alpha) * plain + alpha * wrong)).max() <= 1
    assert (rgb[1, 0] == plain).all()
    assert wrong[0] > wrong[2] and right[2] > right[0]  # orange, blue


def test_filter_grid_eight_by_eight_with_the_papers_colour_range():
    weights = np.zeros((64, 1, 7, 7), dtype=np.float32)
    weights[0, 0, 0, 0] = 0.4
    weights[1, 0, 0, 0] = -1.0  # beyond the range: clipped to full blue
    grid = arrays.filter_grid(weights, scale=2)
    assert grid.shape == (8 * (14 + 1) + 1, 8 * (14 + 1) + 1, 3)
    red, blue, white = grid[1, 1], grid[1, 16], grid[5, 5]
    assert red[0] > 150 and red[2] < 60
    assert blue[2] > 150 and blue[0] < 60
    assert (white == 255).all()


def test_unpack_mask_round_trip():
    mask = (np.random.default_rng(1).random((5, 7)) > 0.5).astype(np.uint8)
    assert (unpack_mask(np.packbits(mask.ravel()).tobytes(), [5, 7]) == mask).all()


def test_upscale_keeps_pixels_crisp():
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    big = arrays.upscale(rgb, min_size=8)
    assert big.shape == (8, 8, 3) and (big[:4, :4] == rgb[0, 0]).all()


def test_filters_key_is_hashable_and_order_free():
    a = filters_key(architecture=["unet", "fpn"], sweep=None, status=[])
    b = filters_key(architecture=["fpn", "unet"])
    assert a == b == (("architecture", ("fpn", "unet")),)
    hash(a)


def test_paper_chart_labels_synthetic_results_beside_the_papers_real_ct():
    from worker.results import paper, stat_charts

    means = paper.architecture_means()
    frame = pd.concat([means.assign(source="paper"), means.assign(source="this database")])
    real = {r["source"] for r in rows(spec(stat_charts.paper_chart(frame)))}
    assert real == {"paper (real CT scans)", "this database"}
    d = spec(stat_charts.paper_chart(frame, synthetic=True))
    assert {r["source"] for r in rows(d)} == {
        "paper (real CT scans)",
        "this database: SYNTHETIC data",
    }
    assert d["spec"]["encoding"]["color"]["title"] == "mean Dice of"

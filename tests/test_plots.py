"""Plots return Figures with the expected panels; wrong predictions are red."""

from __future__ import annotations

import io

import matplotlib
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from torch import nn

from tlhelpers.plots import (
    denormalize,
    plot_confusion_matrix,
    plot_embedding,
    plot_history,
    plot_strategy_comparison,
    show_feature_maps,
    show_filters,
    show_images,
    show_predictions,
)
from tlhelpers.training import History

matplotlib.use("Agg")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def renders(figure: Figure) -> bool:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=30)
    return buffer.getvalue().startswith(b"\x89PNG")


def normalized_images(n: int = 5) -> torch.Tensor:
    images = torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_denormalize_inverts_normalize():
    images = torch.rand(2, 3, 4, 4)
    normalized = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(denormalize(normalized, MEAN, STD), images, atol=1e-6)
    assert torch.allclose(denormalize(normalized[0], MEAN, STD), images[0], atol=1e-6)
    assert denormalize(torch.full((3, 2, 2), 100.0), MEAN, STD).max() == 1.0


def test_denormalize_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        denormalize(torch.zeros(4, 2, 2), MEAN, STD)


def test_show_images_one_axis_per_image_with_titles():
    figure = show_images(normalized_images(5), titles=list("abcde"), mean=MEAN, std=STD, ncols=3)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 5
    assert [ax.get_title() for ax in figure.axes] == list("abcde")
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (6, 6, 3) and shown.min() >= 0 and shown.max() <= 1
    assert renders(figure)


def test_show_images_checks_titles():
    with pytest.raises(ValueError, match="titles"):
        show_images(normalized_images(3), titles=["only one"])


def test_show_predictions_marks_wrong_ones_red():
    labels = torch.tensor([0, 1, 0, 1])
    predictions = torch.tensor([0, 0, 0, 1])
    probabilities = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    figure = show_predictions(
        normalized_images(4), labels, predictions, ["ants", "bees"], MEAN, STD, probabilities=probabilities
    )
    assert len(figure.axes) == 4
    red = to_rgba("red")
    colors = [to_rgba(ax.title.get_color()) for ax in figure.axes]
    assert [color == red for color in colors] == [False, True, False, False]
    assert figure.axes[1].get_title() == "pred: ants (0.70)\ntrue: bees"
    assert renders(figure)


def test_plot_history_compares_strategies():
    head_only = History(train_loss=[1.0, 0.6], val_loss=[0.9, 0.7], train_acc=[0.5, 0.8], val_acc=[0.6, 0.9])
    fine_tuned = History(
        train_loss=[0.8, 0.3], val_loss=[0.7, 0.4], train_acc=[0.7, 0.9], val_acc=[0.8, 0.95]
    )
    figure = plot_history({"head only": head_only, "fine-tuned": fine_tuned})
    assert len(figure.axes) == 2
    loss_axis, acc_axis = figure.axes
    assert len(loss_axis.lines) == 4 and len(acc_axis.lines) == 4
    assert list(acc_axis.lines[1].get_ydata()) == [0.6, 0.9]
    assert renders(figure)
    assert len(plot_history(head_only, metrics=("acc",)).axes) == 1


def test_plot_history_rejects_unknown_metric():
    with pytest.raises(ValueError, match="f1"):
        plot_history(History(train_loss=[1.0]), metrics=("f1",))


def test_confusion_matrix_counts():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 1, 0]
    figure = plot_confusion_matrix(labels, predictions, ["a", "b", "c"])
    (ax,) = figure.axes
    matrix = ax.images[0].get_array()
    assert matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert sorted(text.get_text() for text in ax.texts) == sorted(
        str(v) for row in matrix.tolist() for v in row
    )
    assert "0.667" in ax.get_title()
    assert renders(figure)


def test_show_filters_as_rgb_tiles():
    weight = torch.randn(6, 3, 5, 5)
    figure = show_filters(weight, ncols=4)
    assert len(figure.axes) == 6
    tile = figure.axes[0].images[0].get_array()
    assert tile.shape == (5, 5, 3) and tile.min() == 0.0 and tile.max() == 1.0
    assert renders(figure)


def test_show_filters_grey_for_other_channel_counts():
    figure = show_filters(torch.randn(4, 16, 3, 3))
    assert figure.axes[0].images[0].get_array().shape == (3, 3)
    with pytest.raises(ValueError, match="conv weight"):
        show_filters(torch.randn(4, 3))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 2),
    )


def test_show_feature_maps_one_row_per_layer_and_hooks_removed():
    model = small_cnn()
    model.train()
    figure = show_feature_maps(model, torch.randn(3, 8, 8), ["0", "2"], n_channels=4)
    assert len(figure.axes) == 8
    assert figure.axes[4].images[0].get_array().shape == (4, 4)
    assert "6×8×8" in figure.axes[0].get_ylabel()
    assert all(not module._forward_hooks for module in model.modules())
    assert model.training
    assert renders(figure)


def test_show_feature_maps_names_unknown_layers():
    with pytest.raises(ValueError, match="layer4"):
        show_feature_maps(small_cnn(), torch.randn(3, 8, 8), ["layer4"])


def test_plot_embedding_pca_panels():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    direction = torch.randn(16, generator=generator)
    features = labels.float().view(-1, 1) * 10 * direction + 0.01 * torch.randn(40, 16, generator=generator)
    figure = plot_embedding(
        {"before": (features, labels), "after": (features * 2, labels)}, classes=["a", "b"]
    )
    assert len(figure.axes) == 2
    assert [ax.get_title() for ax in figure.axes] == ["before", "after"]
    assert len(figure.axes[0].collections) == 2, "one scatter per class"
    assert "100%" in figure.axes[0].get_xlabel()
    single = plot_embedding(features, labels, ["a", "b"], title="one")
    assert len(single.axes) == 1 and single.axes[0].get_title() == "one"
    assert renders(single)


def test_plot_embedding_checks_label_count():
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(torch.randn(10, 4), torch.zeros(9, dtype=torch.long))


def test_plot_strategy_comparison_bars():
    results = {
        "linear probe": {"accuracy": 0.95, "seconds": 12.0},
        "fine-tune": {"accuracy": 0.97, "seconds": 80.0},
        "from scratch": History(val_acc=[0.55, 0.62], seconds=[30.0, 31.0]),
    }
    figure = plot_strategy_comparison(results)
    accuracy_axis, time_axis = figure.axes
    assert [bar.get_height() for bar in accuracy_axis.patches] == [0.95, 0.97, 0.62]
    assert [bar.get_height() for bar in time_axis.patches] == [12.0, 80.0, 61.0]
    assert renders(figure)
    assert len(plot_strategy_comparison({"a": {"accuracy": 0.5}}).axes) == 1
    with pytest.raises(ValueError, match="accuracy"):
        plot_strategy_comparison({"a": {"seconds": 1.0}})

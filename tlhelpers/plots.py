"""Plots: image grids, predictions, training curves, confusion matrices, filters, feature maps, embeddings.

Every function builds a ``matplotlib.figure.Figure`` without pyplot and returns it. In Jupyter a
returned Figure shows when it is the cell's last value (or with ``display(fig)``); elsewhere use
``fig.savefig(...)``. Working without pyplot keeps them safe on headless machines and avoids the
double plot that pyplot's inline backend draws for a returned figure. Importing this module inside
a Jupyter kernel switches on the inline backend, which is what teaches IPython to draw a Figure as
a picture rather than print its repr.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .training import History


def _show_figures_inline() -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and "IPKernelApp" in shell.config:
        shell.run_line_magic("matplotlib", "inline")


_show_figures_inline()

_WRONG_COLOR = "red"
_RIGHT_COLOR = "darkgreen"


def denormalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` on an image [3, H, W] or batch [N, 3, H, W]; values clamped to [0, 1].

    Defined in 01_imagenet_features.
    """
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1, 1)
    if tensor.shape[-3] != mean.shape[0]:
        raise ValueError(
            f"image has {tensor.shape[-3]} channels but mean/std have {mean.shape[0]}; "
            "expected [3, H, W] or [N, 3, H, W]"
        )
    return (tensor * std + mean).clamp(0, 1)


def _to_displayable(image, mean, std) -> np.ndarray:
    """A PIL image or a [C, H, W] tensor as an [H, W, C] (or [H, W]) array imshow understands."""
    if not isinstance(image, torch.Tensor):
        return np.asarray(image)
    image = image.detach().cpu().float()
    if mean is not None and std is not None:
        image = denormalize(image, mean, std)
    else:
        image = image.clamp(0, 1)
    if image.shape[0] == 1:
        return image[0].numpy()
    return image.permute(1, 2, 0).numpy()


def _grid(count: int, ncols: int, cell_size: float = 2.0) -> tuple[Figure, list]:
    """A figure with ``count`` axes laid out ``ncols`` wide (unused cells removed)."""
    if count < 1:
        raise ValueError("nothing to plot: got no images")
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    figure = Figure(figsize=(cell_size * ncols, cell_size * 1.15 * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[count:]:
        extra.remove()
    for ax in axes[:count]:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure, axes[:count]


def show_images(images, titles=None, mean=None, std=None, ncols: int = 8) -> Figure:
    """A grid of images (a batch tensor, a list of tensors or PIL images) with optional titles.

    Pass the ``mean``/``std`` of the normalisation to see the photos as they were.
    Defined in 01_imagenet_features.
    """
    images = list(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    figure, axes = _grid(len(images), ncols)
    for index, (ax, image) in enumerate(zip(axes, images, strict=True)):
        ax.imshow(_to_displayable(image, mean, std), cmap="gray")
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize=9)
    return figure


def show_predictions(
    images, labels, predictions, classes, mean, std, probabilities=None, ncols: int = 8
) -> Figure:
    """Images titled with predicted and true class; wrong predictions in red with a red frame.

    ``probabilities`` ([N, C], optional) adds the confidence of each prediction.
    Defined in 04_training_the_head.
    """
    images = list(images)
    labels = torch.as_tensor(labels).tolist()
    predictions = torch.as_tensor(predictions).tolist()
    if not len(images) == len(labels) == len(predictions):
        raise ValueError(
            "images, labels and predictions differ in length: "
            f"{len(images)}, {len(labels)}, {len(predictions)}"
        )
    figure, axes = _grid(len(images), ncols)
    for index, (ax, image, label, predicted) in enumerate(
        zip(axes, images, labels, predictions, strict=True)
    ):
        ax.imshow(_to_displayable(image, mean, std))
        title = f"pred: {classes[predicted]}"
        if probabilities is not None:
            title += f" ({float(probabilities[index][predicted]):.2f})"
        title += f"\ntrue: {classes[label]}"
        color = _RIGHT_COLOR if label == predicted else _WRONG_COLOR
        ax.set_title(title, fontsize=9, color=color)
        if label != predicted:
            for spine in ax.spines.values():
                spine.set_edgecolor(_WRONG_COLOR)
                spine.set_linewidth(3)
    return figure


def plot_history(histories, metrics=("loss", "acc")) -> Figure:
    """Training curves: one panel per metric, one colour per run (dashed train, solid validation).

    ``histories`` is one ``History`` or a dict ``{"strategy name": History}`` to compare runs.
    Defined in 04_training_the_head, used again in 05_fine_tuning and 06_capstone.
    """
    if isinstance(histories, History):
        histories = {"": histories}
    if not histories:
        raise ValueError("plot_history needs at least one History")
    for metric in metrics:
        if metric not in ("loss", "acc"):
            raise ValueError(f"unknown metric {metric!r}: choose from 'loss' and 'acc'")
    figure = Figure(figsize=(5 * len(metrics), 3.6), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for color_index, (name, history) in enumerate(histories.items()):
            color = f"C{color_index}"
            prefix = f"{name} " if name else ""
            for split, style in (("train", "--"), ("val", "-")):
                values = getattr(history, f"{split}_{metric}")
                if values:
                    epochs = range(1, len(values) + 1)
                    ax.plot(epochs, values, style, color=color, marker=".", label=f"{prefix}{split}")
        ax.set_xlabel("epoch")
        ax.set_ylabel({"loss": "loss", "acc": "accuracy"}[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def plot_confusion_matrix(labels, predictions, classes) -> Figure:
    """Confusion matrix with counts: rows are true classes, columns predicted ones.

    Defined in 04_training_the_head.
    """
    labels = torch.as_tensor(labels).long().reshape(-1)
    predictions = torch.as_tensor(predictions).long().reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"got {labels.numel()} labels but {predictions.numel()} predictions")
    num_classes = len(classes)
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    matrix = counts.reshape(num_classes, num_classes).numpy()
    figure = Figure(figsize=(1.2 * num_classes + 2.5, 1.2 * num_classes + 2), layout="constrained")
    ax = figure.subplots()
    ax.imshow(matrix, cmap="Blues")
    for row in range(num_classes):
        for column in range(num_classes):
            value = matrix[row, column]
            color = "white" if value > matrix.max() / 2 else "black"
            ax.text(column, row, str(value), ha="center", va="center", color=color)
    ax.set_xticks(range(num_classes), classes, rotation=45, ha="right")
    ax.set_yticks(range(num_classes), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = float(np.trace(matrix)) / max(1, matrix.sum())
    ax.set_title(f"accuracy {accuracy:.3f} on {matrix.sum()} images")
    return figure


def show_filters(conv_weight: torch.Tensor, ncols: int = 8) -> Figure:
    """First-layer convolution filters [out, in, kH, kW] as tiles (RGB when ``in`` is 3, else grey).

    Each filter is stretched to [0, 1] on its own so that its pattern is visible.
    Defined in 01_imagenet_features.
    """
    if conv_weight.ndim != 4:
        raise ValueError(f"expected a conv weight [out, in, kH, kW], got shape {tuple(conv_weight.shape)}")
    weights = conv_weight.detach().cpu().float()
    if weights.shape[1] != 3:
        weights = weights.mean(dim=1, keepdim=True)
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    weights = (weights - low) / (high - low).clamp_min(1e-12)
    figure, axes = _grid(weights.shape[0], ncols, cell_size=1.0)
    for ax, tile in zip(axes, weights, strict=True):
        ax.imshow(_to_displayable(tile, None, None), cmap="gray", interpolation="nearest")
    return figure


def show_feature_maps(
    model: nn.Module, image_tensor: torch.Tensor, layer_names, n_channels: int = 8
) -> Figure:
    """The first ``n_channels`` activation maps of each named layer for one image (one row per layer).

    Uses forward hooks, so the model is run once; its train/eval mode is left as it was.
    Defined in 01_imagenet_features.
    """
    layer_names = list(layer_names)
    if not layer_names:
        raise ValueError("layer_names is empty: name at least one layer (see model.named_modules())")
    modules = dict(model.named_modules())
    missing = [name for name in layer_names if name not in modules]
    if missing:
        top_level = ", ".join(name for name, _ in model.named_children())
        raise ValueError(
            f"{type(model).__name__} has no layer named {missing}; its top-level parts: {top_level}"
        )
    activations = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda _module, _inputs, output, name=name: activations.__setitem__(name, output.detach().cpu())
        )
        for name in layer_names
    ]
    batch = image_tensor.unsqueeze(0) if image_tensor.ndim == 3 else image_tensor[:1]
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(batch.to(device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    figure = Figure(figsize=(1.6 * n_channels, 1.8 * len(layer_names)), layout="constrained")
    axes = figure.subplots(len(layer_names), n_channels, squeeze=False)
    for row, name in zip(axes, layer_names, strict=True):
        maps = activations[name][0]
        if maps.ndim != 3:
            raise ValueError(f"layer {name!r} outputs shape {tuple(maps.shape)}, not feature maps [C, H, W]")
        for channel, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if channel < maps.shape[0]:
                ax.imshow(maps[channel].float().numpy(), cmap="viridis")
        row[0].set_ylabel(f"{name}\n{maps.shape[0]}×{maps.shape[1]}×{maps.shape[2]}", fontsize=8)
    return figure


def _pca_2d(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the two main directions; also return the share of variance each explains."""
    features = torch.as_tensor(features).detach().cpu().double().reshape(len(features), -1)
    centered = features - features.mean(dim=0)
    _, singular_values, right_vectors = torch.linalg.svd(centered, full_matrices=False)
    projected = centered @ right_vectors[:2].T
    variance = singular_values**2
    explained = (variance[:2] / variance.sum().clamp_min(1e-12)).numpy()
    return projected.numpy(), explained


def plot_embedding(features, labels=None, classes=None, title=None) -> Figure:
    """Scatter features projected to 2-D with PCA, one colour per class.

    ``features`` is an [N, D] tensor (then pass ``labels``), or a dict ``{"name": (features, labels)}``
    to compare, say, ImageNet features before and after fine-tuning side by side.
    Defined in 04_training_the_head, used again in 05_fine_tuning.
    """
    panels = features if isinstance(features, dict) else {title or "": (features, labels)}
    if not panels:
        raise ValueError("plot_embedding needs at least one set of features")
    figure = Figure(figsize=(4.5 * len(panels), 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, (panel_features, panel_labels)) in zip(axes, panels.items(), strict=True):
        if panel_labels is None:
            raise ValueError(f"labels are missing for the features {name!r}")
        points, explained = _pca_2d(panel_features)
        panel_labels = torch.as_tensor(panel_labels).reshape(-1).numpy()
        if len(panel_labels) != len(points):
            raise ValueError(f"{name!r}: {len(points)} feature vectors but {len(panel_labels)} labels")
        for class_index in np.unique(panel_labels):
            chosen = panel_labels == class_index
            label = classes[class_index] if classes is not None else str(class_index)
            ax.scatter(points[chosen, 0], points[chosen, 1], s=12, alpha=0.7, label=label)
        ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    if isinstance(features, dict) and title:
        figure.suptitle(title)
    return figure


def plot_strategy_comparison(results: dict) -> Figure:
    """Bar charts comparing strategies: accuracy and, when given, training time in seconds.

    ``results`` maps a strategy name to ``{"accuracy": float, "seconds": float}`` (seconds optional)
    or to its ``History`` (best validation accuracy and total seconds are used).
    Defined in 06_capstone.
    """
    if not results:
        raise ValueError("plot_strategy_comparison needs at least one strategy")
    names, accuracies, seconds = [], [], []
    for name, result in results.items():
        if isinstance(result, History):
            result = {"accuracy": result.best_val_acc, "seconds": result.total_seconds}
        if result.get("accuracy") is None:
            raise ValueError(f"strategy {name!r} has no 'accuracy' (got keys {sorted(result)})")
        names.append(name)
        accuracies.append(float(result["accuracy"]))
        seconds.append(result.get("seconds"))
    panels = [("accuracy", accuracies)]
    if all(value is not None for value in seconds):
        panels.append(("seconds", [float(value) for value in seconds]))
    figure = Figure(figsize=(max(4.0, 1.3 * len(names)) * len(panels), 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    colors = [f"C{index}" for index in range(len(names))]
    for ax, (quantity, values) in zip(axes, panels, strict=True):
        bars = ax.bar(names, values, color=colors)
        number_format = "{:.3f}" if quantity == "accuracy" else "{:.1f} s"
        ax.bar_label(bars, labels=[number_format.format(value) for value in values], fontsize=8)
        ax.set_ylabel(quantity)
        ax.tick_params(axis="x", labelrotation=20)
        if quantity == "accuracy":
            ax.set_ylim(0, 1.05)
    return figure

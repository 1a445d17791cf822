"""Interactive demos: a freezing explorer and an upload-and-predict box.

Each widget is a thin shell around plain functions (``freezing_summary``, ``predict_image``,
``upload_contents``) that do the work and can be tested without a browser. Every widget also shows
a static version of its answer (a table for every setting, a prediction on a sample photo), so a
notebook exported to HTML, run by nbconvert or opened where widgets are not rendered still shows
something useful. Works with ipywidgets 7.7 (what Colab preinstalls) and 8; ipywidgets is imported
only when a widget is built.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .imagenet import top_k
from .models import Backbone, find_head, replace_head
from .utils import is_autograding, pick_device

TIMINGS = ("measure", "estimate", "none")
# A backward pass through a layer costs about twice its forward pass (gradients for its input
# and for its weights); used by the "estimate" timing.
_BACKWARD_OVER_FORWARD = 2.0


# ---------------------------------------------------------------- the freezing explorer: plain functions


def model_stages(model: nn.Module) -> list[str]:
    """The stages of ``model`` from input to head, as the freezing explorer unfreezes them.

    A stage is a dotted module name, or several joined by ``+`` (``"conv1+bn1"``). torchvision
    ResNets give ``conv1+bn1, layer1, ..., layer4, fc``; timm EfficientNets give ``conv_stem+bn1,
    blocks.0, ..., blocks.6, conv_head+bn2, classifier``; any other model gives its top-level
    children that hold parameters. Defined in 02_freezing.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    head_name, _ = find_head(model)
    if all(hasattr(model, name) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")):
        return ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", head_name]
    if all(hasattr(model, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        blocks = [f"blocks.{index}" for index in range(len(model.blocks))]
        return ["conv_stem+bn1", *blocks, "conv_head+bn2", head_name]
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


@dataclass
class FreezingSummary:
    """What training costs with the top ``n_unfrozen`` stages trainable and the rest frozen.

    Memory is in MB (10^6 bytes): gradients (one value per trainable scalar), Adam's state (two) and
    SGD-with-momentum's state (one). ``timing`` says whether the seconds were "measured",
    "estimated" or "not timed" (then they are None). Defined in 02_freezing.
    """

    n_unfrozen: int
    trainable_stages: list[str]
    trainable: int
    total: int
    gradient_mb: float
    adam_mb: float
    sgd_momentum_mb: float
    step_seconds: float | None = None
    epoch_seconds: float | None = None
    timing: str = "not timed"

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a fraction of all parameters."""
        return self.trainable / self.total if self.total else 0.0


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return value


def _stage_modules(model: nn.Module, stage: str) -> list[nn.Module]:
    modules = []
    for name in stage.split("+"):
        try:
            modules.append(model.get_submodule(name.strip()))
        except AttributeError:
            children = ", ".join(child for child, _ in model.named_children())
            raise ValueError(
                f"stages names {name.strip()!r}, but {type(model).__name__} has no such submodule; "
                f"its top-level parts are: {children}"
            ) from None
    return modules


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FreezingCosts:
    """Parameter counts, optimizer memory and time per epoch for each number of unfrozen stages.

    Works on a private copy of ``model`` (with a fresh ``num_classes`` head unless that is None),
    so the model you pass is never changed. Timings are cached per setting. Use ``summary(n)``, or
    the one-call ``freezing_summary``. Defined in 02_freezing.
    """

    def __init__(
        self,
        model: nn.Module,
        stages=None,
        *,
        num_classes: int | None = 2,
        num_images: int = 244,
        batch_size: int = 8,
        image_size: int = 224,
        device=None,
    ):
        if isinstance(model, Backbone):
            model = model.model
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch nn.Module or a Backbone from load_pretrained(), "
                f"got {type(model).__name__}"
            )
        self.num_images = _positive_int(num_images, "num_images")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.image_size = _positive_int(image_size, "image_size")
        if num_classes is not None:
            _positive_int(num_classes, "num_classes")
        self.model = copy.deepcopy(model)
        if num_classes is not None:
            replace_head(self.model, num_classes)
        self.num_classes = find_head(self.model)[1].out_features
        if stages is None:
            stages = model_stages(self.model)
        if isinstance(stages, str) or not all(isinstance(stage, str) for stage in stages):
            raise TypeError(f"stages must be a list of module names (strings), got {stages!r}")
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("stages is empty: name at least one module (the head)")
        self._stage_parameters = []
        for stage in self.stages:
            parameters = {
                id(p): p for module in _stage_modules(self.model, stage) for p in module.parameters()
            }
            self._stage_parameters.append(list(parameters.values()))
        self.device = torch.device(device) if device is not None else pick_device()
        self._measured: dict[int, float] = {}
        self._stage_forward_seconds: list[float] | None = None
        self._forward_seconds: float | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Training steps in one pass over ``num_images`` images in batches of ``batch_size``."""
        return math.ceil(self.num_images / self.batch_size)

    def _check_n(self, n_unfrozen) -> int:
        if isinstance(n_unfrozen, bool) or not isinstance(n_unfrozen, int):
            raise TypeError(f"n_unfrozen must be a whole number, got {n_unfrozen!r}")
        if not 1 <= n_unfrozen <= len(self.stages):
            raise ValueError(
                f"n_unfrozen must be between 1 (the head only) and {len(self.stages)} "
                f"(every stage: {', '.join(self.stages)}), got {n_unfrozen}"
            )
        return n_unfrozen

    def _trainable(self, n_unfrozen: int) -> list[nn.Parameter]:
        unique = {}
        for parameters in self._stage_parameters[len(self.stages) - n_unfrozen :]:
            unique.update((id(p), p) for p in parameters)
        return list(unique.values())

    def _set_trainable(self, n_unfrozen: int) -> list[nn.Parameter]:
        for parameter in self.model.parameters():
            parameter.requires_grad = False
        trainable = self._trainable(n_unfrozen)
        for parameter in trainable:
            parameter.requires_grad = True
        return trainable

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(self.batch_size, 3, self.image_size, self.image_size, generator=generator)
        labels = torch.randint(0, self.num_classes, (self.batch_size,), generator=generator)
        return images.to(self.device), labels.to(self.device)

    def measure_step(self, n_unfrozen: int, repeats: int = 2) -> float:
        """Seconds of one training step (forward, backward, Adam step), best of ``repeats`` after a
        warm-up step. Cached per ``n_unfrozen``."""
        n_unfrozen = self._check_n(n_unfrozen)
        if n_unfrozen in self._measured:
            return self._measured[n_unfrozen]
        model = self.model.to(self.device).train()
        trainable = self._set_trainable(n_unfrozen)
        optimizer = torch.optim.Adam(trainable, lr=1e-3)
        images, labels = self._batch()
        best = math.inf
        try:
            for attempt in range(1 + _positive_int(repeats, "repeats")):
                optimizer.zero_grad(set_to_none=True)
                _synchronize(self.device)
                started = time.perf_counter()
                nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()
                _synchronize(self.device)
                if attempt:  # the first step is a warm-up
                    best = min(best, time.perf_counter() - started)
        finally:
            for parameter in trainable:
                parameter.grad = None
        self._measured[n_unfrozen] = best
        return best

    def _time_stages(self) -> None:
        """One forward pass with hooks: its total time and the time spent in each stage."""
        model = self.model.to(self.device).train()
        images, _ = self._batch()
        seconds = [0.0] * len(self.stages)
        starts = {}
        hooks = []
        for index, stage in enumerate(self.stages):
            for module in _stage_modules(model, stage):

                def before(module, _inputs):
                    _synchronize(self.device)
                    starts[module] = time.perf_counter()

                def after(module, _inputs, _output, index=index):
                    _synchronize(self.device)
                    seconds[index] += time.perf_counter() - starts[module]

                hooks.append(module.register_forward_pre_hook(before))
                hooks.append(module.register_forward_hook(after))
        try:
            with torch.no_grad():
                model(images[:1])  # warm-up: one image is enough to set everything up
                seconds[:] = [0.0] * len(self.stages)
                _synchronize(self.device)
                started = time.perf_counter()
                model(images)
                _synchronize(self.device)
                self._forward_seconds = time.perf_counter() - started
        finally:
            for hook in hooks:
                hook.remove()
        self._stage_forward_seconds = seconds

    def estimate_step(self, n_unfrozen: int) -> float:
        """Seconds of one training step, estimated from one timed forward pass: the whole forward
        pass plus about twice the forward time of each trainable stage for the backward pass."""
        n_unfrozen = self._check_n(n_unfrozen)
        if self._stage_forward_seconds is None:
            self._time_stages()
        backward = sum(self._stage_forward_seconds[len(self.stages) - n_unfrozen :])
        return self._forward_seconds + _BACKWARD_OVER_FORWARD * backward

    def summary(self, n_unfrozen: int, timing: str = "measure") -> FreezingSummary:
        """The ``FreezingSummary`` with the top ``n_unfrozen`` stages trainable.

        ``timing`` is "measure" (time real training steps), "estimate" (from one forward pass) or
        "none". While nbgrader autograding runs nothing is timed.
        """
        n_unfrozen = self._check_n(n_unfrozen)
        if timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(map(repr, TIMINGS))}, got {timing!r}")
        trainable = self._trainable(n_unfrozen)
        total = sum(p.numel() for p in self.model.parameters())
        trainable_count = sum(p.numel() for p in trainable)
        gradient_bytes = sum(p.numel() * p.element_size() for p in trainable)
        step = None
        if is_autograding() or timing == "none":
            timing = "none"
        elif timing == "measure":
            step = self.measure_step(n_unfrozen)
        else:
            step = self.estimate_step(n_unfrozen)
        return FreezingSummary(
            n_unfrozen=n_unfrozen,
            trainable_stages=self.stages[len(self.stages) - n_unfrozen :],
            trainable=trainable_count,
            total=total,
            gradient_mb=gradient_bytes / 1e6,
            adam_mb=2 * gradient_bytes / 1e6,
            sgd_momentum_mb=gradient_bytes / 1e6,
            step_seconds=step,
            epoch_seconds=None if step is None else step * self.steps_per_epoch,
            timing={"measure": "measured", "estimate": "estimated", "none": "not timed"}[timing],
        )


def freezing_summary(
    model: nn.Module,
    stages=None,
    n_unfrozen: int = 1,
    *,
    num_classes: int | None = 2,
    num_images: int = 244,
    batch_size: int = 8,
    image_size: int = 224,
    timing: str = "measure",
    device=None,
) -> FreezingSummary:
    """What training costs with the top ``n_unfrozen`` of ``stages`` trainable (1 = the head only).

    ``model`` is an ``nn.Module`` or a ``Backbone``; it is not changed (the work happens on a copy
    with a fresh ``num_classes`` head). ``stages`` defaults to ``model_stages(model)``. The time per
    epoch is one training step on a batch of ``batch_size`` random ``image_size`` images, measured
    (``timing="measure"``) or estimated (``"estimate"``), times the steps that ``num_images`` images
    take. Defined in 02_freezing.
    """
    costs = FreezingCosts(
        model,
        stages,
        num_classes=num_classes,
        num_images=num_images,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
    )
    return costs.summary(n_unfrozen, timing=timing)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


_COLUMNS = (
    "unfrozen",
    "trainable stages",
    "trainable parameters",
    "gradients MB",
    "Adam state MB",
    "SGD momentum MB",
    "s per epoch",
)


def _row(summary: FreezingSummary) -> list[str]:
    stages = summary.trainable_stages
    shown = " + ".join(stages) if len(stages) <= 3 else f"{stages[0]} ... {stages[-1]} ({len(stages)})"
    return [
        str(summary.n_unfrozen),
        shown,
        f"{summary.trainable:,} ({summary.trainable_share:.2%})",
        f"{summary.gradient_mb:.3f}",
        f"{summary.adam_mb:.3f}",
        f"{summary.sgd_momentum_mb:.3f}",
        _seconds(summary.epoch_seconds),
    ]


def freezing_table(summaries) -> str:
    """The summaries as a plain-text table, one row per setting. Defined in 02_freezing."""
    rows = [list(_COLUMNS)] + [_row(summary) for summary in summaries]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if column == 1 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def freezing_table_html(summaries) -> str:
    """The summaries as an HTML table (what the explorer shows). Defined in 02_freezing."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _row(summary)) + "</tr>"
        for summary in summaries
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _panel_html(summary: FreezingSummary, costs: FreezingCosts, hint: str = "") -> str:
    if summary.epoch_seconds is None:
        time_line = "time per epoch: not timed (nothing is timed while autograding)"
    else:
        time_line = (
            f"time per epoch ({summary.timing}): <b>{_seconds(summary.epoch_seconds)} s</b> = "
            f"{_seconds(summary.step_seconds)} s per step x {costs.steps_per_epoch} steps "
            f"({costs.num_images} images, batches of {costs.batch_size}, "
            f"{costs.image_size}x{costs.image_size} pixels, {costs.device.type}){hint}"
        )
    frozen = costs.stages[: len(costs.stages) - summary.n_unfrozen]
    items = [
        f"trainable: <b>{html.escape(', '.join(summary.trainable_stages))}</b>",
        f"frozen: {html.escape(', '.join(frozen)) or 'nothing'}",
        f"trainable parameters: <b>{summary.trainable:,}</b> of {summary.total:,} "
        f"({summary.trainable_share:.2%})",
        f"gradients: {summary.gradient_mb:.3f} MB; optimizer state: Adam <b>{summary.adam_mb:.3f} MB</b>, "
        f"SGD with momentum {summary.sgd_momentum_mb:.3f} MB",
        time_line,
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _ipywidgets():
    """The ipywidgets module, or None where it is not installed."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


def _display(item, raw: bool = False) -> None:
    """IPython's display inside Jupyter; outside it (a script, a terminal) print the text version."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        shell = None
    else:
        shell = get_ipython()
    if shell is None:
        print(item["text/plain"] if raw else item)
    else:
        display(item, raw=raw)


class _WidgetWithFallback:
    """Shows ``self.widget`` where widgets work, then always the static output of ``_static_bundle``."""

    widget = None

    def _static_bundle(self) -> dict:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        if self.widget is not None:
            _display(self.widget)
        _display(self._static_bundle(), raw=True)

    def show(self) -> None:
        """Display the widget (where widgets are rendered) and, below it, the static output."""
        self._ipython_display_()


class FreezingExplorer(_WidgetWithFallback):
    """A slider for the number of unfrozen stages and a panel with what that costs, plus a static
    table of every setting (what you see where widgets are not rendered). Build it with
    ``freezing_explorer``; ``on_change`` is the slider's callback. Defined in 02_freezing.
    """

    def __init__(
        self, costs: FreezingCosts, *, timing: str = "measure", static: bool = False, title: str = ""
    ):
        if timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(map(repr, TIMINGS))}, got {timing!r}")
        self.costs = costs
        self.timing = timing
        self.title = title
        table_timing = "none" if timing == "none" else "estimate"
        self.rows = [costs.summary(n, timing=table_timing) for n in range(1, len(costs.stages) + 1)]
        widgets = None if static or is_autograding() else _ipywidgets()
        self.slider = self.panel = self.widget = None
        if widgets is not None:
            self.slider = widgets.IntSlider(
                value=1,
                min=1,
                max=len(costs.stages),
                step=1,
                description="unfrozen",
                continuous_update=False,
            )
            # The first view reuses the table's estimate, so showing the explorer times nothing;
            # moving the slider measures.
            hint = "; move the slider to time real training steps" if timing == "measure" else ""
            self.panel = widgets.HTML(value=_panel_html(self.rows[0], costs, hint=hint))
            self.slider.observe(self.on_change, names="value")
            self.widget = widgets.VBox(
                [widgets.HTML(value=f"<b>{html.escape(title)}</b>"), self.slider, self.panel]
            )

    def panel_html(self, n_unfrozen: int) -> str:
        """The live panel's HTML for ``n_unfrozen`` stages."""
        return _panel_html(self.costs.summary(n_unfrozen, timing=self.timing), self.costs)

    def on_change(self, change) -> None:
        """Slider callback: show the costs of the new number of unfrozen stages."""
        n_unfrozen = change["new"]
        if self.timing == "measure" and n_unfrozen not in self.costs._measured:
            self.panel.value = f"<i>Timing training steps with the top {n_unfrozen} stage(s) trainable</i>"
        try:
            self.panel.value = self.panel_html(n_unfrozen)
        except RuntimeError as error:  # e.g. out of GPU memory; a callback's traceback would be invisible
            self.panel.value = _message_html(f"Could not time {n_unfrozen} unfrozen stage(s): {error}")

    def table(self) -> str:
        """The static table of every setting, as plain text."""
        return freezing_table(self.rows)

    def _static_bundle(self) -> dict:
        timing = self.rows[0].timing
        note = (
            f"Every setting at once (time per epoch {timing}: one forward pass timed, backward counted as "
            "twice the forward time of the trainable stages)."
            if timing == "estimated"
            else "Every setting at once (not timed)."
        )
        title = f"{self.title}\n" if self.title else ""
        title_html = f"<b>{html.escape(self.title)}</b><br>" if self.title else ""
        return {
            "text/plain": f"{title}{note}\n{self.table()}",
            "text/html": f"<p>{title_html}{html.escape(note)}</p>{freezing_table_html(self.rows)}",
        }


def freezing_explorer(
    backbone,
    stages=None,
    *,
    num_classes: int | None = 2,
    num_images: int = 244,
    batch_size: int = 8,
    image_size: int | None = None,
    timing: str = "measure",
    static: bool = False,
    device=None,
) -> FreezingExplorer:
    """A slider: how many stages (from the head down) to unfreeze, and what that costs.

    ``backbone`` is a ``Backbone`` or an ``nn.Module``. The panel shows trainable parameters,
    gradient and optimizer memory and the time per epoch for ``num_images`` images (``timing``:
    "measure", "estimate" or "none"; measurements are cached, so going back to a setting is
    instant). Below it a static table lists every setting with estimated times; with
    ``static=True``, without ipywidgets, or while autograding only the table is shown. Show it by
    making it a cell's last value, or with ``.show()``. Defined in 02_freezing.
    """
    if isinstance(backbone, Backbone):
        name, model = backbone.name, backbone.model
        image_size = image_size or backbone.input_size
    elif isinstance(backbone, nn.Module):
        name, model = type(backbone).__name__, backbone
    else:
        raise TypeError(
            "backbone must be a Backbone from load_pretrained() or a torch nn.Module, "
            f"got {type(backbone).__name__}"
        )
    costs = FreezingCosts(
        model,
        stages,
        num_classes=num_classes,
        num_images=num_images,
        batch_size=batch_size,
        image_size=image_size or 224,
        device=device,
    )
    head = f"a new {costs.num_classes}-class head" if num_classes is not None else "its own head"
    title = f"{name} with {head}: unfreeze the top stages, from the head down"
    return FreezingExplorer(costs, timing=timing, static=static, title=title)


# ---------------------------------------------------------------- upload and predict: plain functions


def upload_contents(value) -> list[tuple[str, bytes]]:
    """The files in a ``FileUpload`` value as ``[(file name, bytes), ...]``.

    Understands both formats: ipywidgets 8 (a tuple of dicts with ``name`` and ``content``, a
    memoryview) and ipywidgets 7 (a dict ``{name: {"metadata": {...}, "content": bytes}}``).
    Defined in 01_imagenet_features.
    """
    if value is None:
        return []
    if isinstance(value, dict):  # ipywidgets 7
        items = []
        for name, entry in value.items():
            if not isinstance(entry, dict) or "content" not in entry:
                raise TypeError(f"value[{name!r}] has no 'content': not a FileUpload value")
            metadata = entry.get("metadata") or {}
            items.append((str(metadata.get("name", name)), bytes(entry["content"])))
        return items
    if isinstance(value, (tuple, list)):  # ipywidgets 8
        items = []
        for index, entry in enumerate(value):
            if not isinstance(entry, dict) or "content" not in entry:
                raise TypeError(f"value[{index}] has no 'content': not a FileUpload value")
            items.append((str(entry.get("name", f"file {index + 1}")), bytes(entry["content"])))
        return items
    raise TypeError(
        f"value must be a FileUpload value (a dict in ipywidgets 7, a tuple in 8), got {type(value).__name__}"
    )


def load_image(image) -> Image.Image:
    """An RGB PIL image from bytes (an uploaded file), a file path or a PIL image.

    Raises ``ValueError`` with a plain message when the bytes are not an image PIL can read.
    Defined in 01_imagenet_features.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image: no file at {path}")
        image = path.read_bytes()
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(f"image must be bytes, a file path or a PIL image, got {type(image).__name__}")
    data = bytes(image)
    if not data:
        raise ValueError("image: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"image: these {len(data):,} bytes are not a picture PIL can read "
            f"(a JPEG, PNG, ... file); {error}"
        ) from None


def predict_image(
    image, backbone: Backbone, model: nn.Module | None = None, classes=None, k: int = 5
) -> list[tuple[str, float]]:
    """The ``k`` most probable classes for one photo: ``[(name, probability), ...]``, highest first.

    ``image`` is bytes, a path or a PIL image; it is prepared with ``backbone.transforms``. Without
    ``model`` the backbone's own ImageNet head answers (categories from ``backbone.categories``); with
    a trained ``model`` (images in, one score per class out) pass its ``classes`` too. ``k`` is capped
    at the number of classes. Defined in 01_imagenet_features, used again in 04_training_the_head.
    """
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"backbone must be the Backbone from load_pretrained(), got {type(backbone).__name__}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive whole number, got {k!r}")
    if model is None:
        model, names = backbone.model, list(backbone.categories)
    else:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
        if classes is None:
            raise ValueError(
                "classes is missing: name the classes of your model, e.g. classes=['ants', 'bees']"
            )
        names = list(classes)
    picture = load_image(image)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    batch = backbone.transforms(picture).unsqueeze(0).to(device)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(batch)
    finally:
        model.train(was_training)
    logits = logits.reshape(-1)
    if logits.numel() != len(names):
        raise ValueError(
            f"the model gives {logits.numel()} scores but classes names {len(names)}: "
            "pass the classes the model was trained on, in the same order"
        )
    return top_k(logits.cpu(), names, k=min(k, len(names)))


def _thumbnail_html(picture: Image.Image, size: int = 224) -> str:
    thumbnail = picture.copy()
    thumbnail.thumbnail((size, size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=85)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{encoded}" style="max-width:{size}px;max-height:{size}px"/>'


def predictions_text(predictions) -> str:
    """Predictions as plain-text lines with a bar of # signs. Defined in 01_imagenet_features."""
    width = max((len(name) for name, _ in predictions), default=0)
    return "\n".join(f"{name:<{width}}  {p:6.1%}  {'#' * round(30 * p)}" for name, p in predictions)


def predictions_html(predictions, picture: Image.Image | None = None, title: str = "") -> str:
    """The photo (when given) beside a bar chart of its predictions, as HTML.

    Defined in 01_imagenet_features.
    """
    bar = "<td style='width:220px'><div style='background:#4c78a8;height:14px;width:{}px'></div></td>"
    rows = []
    for name, p in predictions:
        rows.append(
            f"<tr><td style='padding-right:8px'>{html.escape(name)}</td>"
            + bar.format(max(1, round(200 * p)))
            + f"<td style='text-align:right'>{p:.1%}</td></tr>"
        )
    bars = "".join(rows)
    image = f"<div style='margin-right:16px'>{_thumbnail_html(picture)}</div>" if picture is not None else ""
    heading = f"<p><b>{html.escape(title)}</b></p>" if title else ""
    return f"{heading}<div style='display:flex;align-items:flex-start'>{image}<table>{bars}</table></div>"


def _message_html(message: str) -> str:
    return f"<p style='color:#b00020'>{html.escape(message)}</p>"


def _default_sample() -> Path | None:
    """The first validation photo of the ants-vs-bees data, or None where the data is not at hand."""
    from .data import find_hymenoptera

    try:
        folder = find_hymenoptera(download=False) / "val"
    except (OSError, ValueError):
        return None
    for class_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_folder.iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                return path
    return None


@dataclass
class UploadPredictor(_WidgetWithFallback):
    """An upload box whose photo goes through the model, plus a prediction on a sample photo shown
    without widgets. Build it with ``upload_and_predict``; ``on_upload`` is the upload callback.
    Defined in 01_imagenet_features.
    """

    backbone: Backbone
    model: nn.Module | None = None
    classes: list | None = None
    k: int = 5
    sample: object = None
    static: bool = False
    upload: object = field(default=None, init=False)
    panel: object = field(default=None, init=False)
    widget: object = field(default=None, init=False)

    def __post_init__(self):
        if not isinstance(self.backbone, Backbone):
            raise TypeError(
                f"backbone must be the Backbone from load_pretrained(), got {type(self.backbone).__name__}"
            )
        if self.model is not None and self.classes is None:
            raise ValueError(
                "classes is missing: name the classes of your model, e.g. classes=['ants', 'bees']"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive whole number, got {self.k!r}")
        widgets = None if self.static or is_autograding() else _ipywidgets()
        if widgets is not None:
            self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
            self.panel = widgets.HTML(value="<i>Choose a photo (JPEG or PNG) to see what the model says.</i>")
            self.upload.observe(self.on_upload, names="value")
            self.widget = widgets.VBox(
                [widgets.HTML(value=f"<b>{html.escape(self.describe())}</b>"), self.upload, self.panel]
            )

    def describe(self) -> str:
        """Which model answers, in words."""
        if self.model is None:
            return f"ImageNet top-{self.k} from {self.backbone.name}, before any training"
        return f"your trained model (classes: {', '.join(map(str, self.classes))})"

    def result_html(self, image, name: str = "") -> str:
        """The photo and its predictions as HTML, or a message saying what went wrong."""
        try:
            picture = load_image(image)
            predictions = predict_image(picture, self.backbone, self.model, self.classes, k=self.k)
        except (ValueError, TypeError, FileNotFoundError) as error:
            return _message_html(f"Could not predict {name or 'this file'}: {error}")
        except Exception as error:  # shown in the panel: a widget callback's traceback is invisible
            return _message_html(
                f"Prediction failed for {name or 'this file'}: {type(error).__name__}: {error}"
            )
        return predictions_html(predictions, picture, title=name)

    def handle(self, value) -> str:
        """Predict the uploaded file(s) in a ``FileUpload`` value; return (and show) the HTML."""
        try:
            files = upload_contents(value)
        except TypeError as error:
            result = _message_html(str(error))
        else:
            result = "".join(self.result_html(data, name) for name, data in files) or "<i>No file.</i>"
        if self.panel is not None:
            self.panel.value = result
        return result

    def on_upload(self, change) -> None:
        """Upload callback: predict what was uploaded."""
        self.handle(change["new"])

    def _static_bundle(self) -> dict:
        if is_autograding():
            text = "(The upload box is skipped while autograding.)"
            return {"text/plain": text, "text/html": f"<p>{html.escape(text)}</p>"}
        sample = self.sample if self.sample is not None else _default_sample()
        if sample is None:
            text = "No sample photo found: pass sample=<a photo's path> to see an example."
            return {"text/plain": text, "text/html": f"<p>{html.escape(text)}</p>"}
        label = Path(sample).name if isinstance(sample, (str, os.PathLike)) else "a sample photo"
        title = f"Example ({self.describe()}): {label}"
        try:
            predictions = predict_image(sample, self.backbone, self.model, self.classes, k=self.k)
        except (ValueError, TypeError, FileNotFoundError) as error:
            text = f"Could not predict the sample photo: {error}"
            return {"text/plain": text, "text/html": _message_html(text)}
        return {
            "text/plain": f"{title}\n{predictions_text(predictions)}",
            "text/html": predictions_html(predictions, load_image(sample), title=title),
        }


def upload_and_predict(
    backbone: Backbone, model: nn.Module | None = None, classes=None, *, k: int = 5, sample=None, static=False
) -> UploadPredictor:
    """An upload box: your own photo goes through the model and its top-``k`` answers appear.

    Without ``model``: the backbone's ImageNet top-``k``. With a trained ``model``: its ``classes``.
    Below the box (and instead of it with ``static=True``, without ipywidgets or while autograding)
    the same prediction is shown for ``sample`` (a path, bytes or PIL image; by default the first
    validation photo). A file that is not a picture gives a message, not a traceback. Show it by
    making it a cell's last value, or with ``.show()``. Defined in 01_imagenet_features.
    """
    return UploadPredictor(backbone, model=model, classes=classes, k=k, sample=sample, static=static)

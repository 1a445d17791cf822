"""Checks that grade the exercises: run a learner's function on fresh inputs and explain mistakes.

Each ``check_<name>(fn, seed=0)`` builds its own small inputs from ``seed`` (tiny synthetic
tensors, tiny models and torchvision/timm architectures without pretrained weights), runs
``fn`` on them and returns None when all is well. Otherwise it raises AssertionError whose
message names the likely mistake. Checks print nothing, silence warnings, touch no network
and leave the caller's random number generators as they were.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import warnings
from collections import Counter

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T
from torchvision import tv_tensors

from . import data, imagenet, models, training, utils
from .models import find_head

_BatchNorm = nn.modules.batchnorm._BatchNorm


# --------------------------------------------------------------------------- shared machinery


def _reference_message(name: str) -> str:
    return (
        f"your function calls tlhelpers.{name}, the reference solution; write your own "
        f"{name} (it earns nothing otherwise)"
    )


@contextlib.contextmanager
def _checking(fn, name: str, seed: int):
    """Refuse the reference itself, silence warnings, run on a private seeded RNG and one thread."""
    if not callable(fn):
        raise AssertionError(f"check_{name} expects your function {name}, got {type(fn).__name__}")
    reference = next(getattr(m, name) for m in (imagenet, models, training, data) if hasattr(m, name))
    if getattr(fn, "is_reference_implementation", False) is True or fn is reference.__wrapped__:
        raise AssertionError(_reference_message(name))
    threads = torch.get_num_threads()
    # The inputs are tiny: one thread is fastest, and much faster on a busy machine.
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def _call(fn, name: str, *args, context: str = "", hint: str = "", hint_when: str = "", **kwargs):
    """Run the learner's ``fn`` while watching for calls to the reference of ``name``.

    If ``fn`` raises, the AssertionError repeats its error and adds ``hint`` (only when the
    error message contains ``hint_when``).
    """
    start = len(utils._reference_calls)
    newly_guarded = name not in utils._guarded
    utils._guarded.add(name)
    grad_enabled = torch.is_grad_enabled()
    error = None
    try:
        result = fn(*args, **kwargs)
    except Exception as caught:  # the learner's code may raise anything; we explain it below
        error = caught
    finally:
        called_reference = name in utils._reference_calls[start:]
        del utils._reference_calls[start:]
        if newly_guarded:
            utils._guarded.discard(name)
        grad_switched = torch.is_grad_enabled() != grad_enabled
        torch.set_grad_enabled(grad_enabled)
    if called_reference:
        raise AssertionError(_reference_message(name))
    if isinstance(error, NotImplementedError):
        raise AssertionError(f"{name} is not written yet: replace `raise NotImplementedError` with your code")
    if error is not None:
        message = f"{name}({context}) raised {type(error).__name__}: {error}"
        if hint and hint_when in str(error):
            message += f"\nHint: {hint}"
        raise AssertionError(message) from error
    if grad_switched:
        raise AssertionError(
            f"{name} switched gradient tracking {'off' if grad_enabled else 'on'} for the whole notebook "
            "(torch.set_grad_enabled); use `with torch.no_grad():` so it only applies inside the block"
        )
    return result


def _names(names, limit: int = 4) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _expect_model_back(result, model, name: str, what: str = "model") -> None:
    if result is None:
        raise AssertionError(f"{name} returned None: end it with `return {what}`")
    if result is not model:
        raise AssertionError(
            f"{name} must return the {what} it was given (the same object, changed in place), "
            f"got a different {type(result).__name__}"
        )


def _plain_number(value, name: str, kind: str):
    """``value`` as a Python number if it is a genuine Python or NumPy number; refuse look-alikes.

    A count may come out as a whole float (``np.prod(())`` is 1.0), so whole floats pass as ints.
    """
    if type(value) in (int, float):
        number = value
    elif isinstance(value, (np.integer, np.floating)) and type(value).__module__ == "numpy":
        number = value.item()
    elif isinstance(value, torch.Tensor):
        raise AssertionError(
            f"{name} returned a tensor ({value!r}); return a plain Python {kind} (use .item())"
        )
    else:
        raise AssertionError(f"{name} must return a Python {kind}, got {type(value).__name__}")
    if kind == "int":
        if type(number) is float and not number.is_integer():
            raise AssertionError(f"{name} must return whole numbers, got {number}")
        return int(number)
    return number


def _submodule(model: nn.Module, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )

    def forward(self, x):
        return x + self.body(x)


class _TinyNet(nn.Module):
    """A stand-in for a ResNet with a few hundred parameters: stem, nested stages, neck, ``fc`` head.

    It also has a parameter registered on the model itself (``logit_scale``), a BatchNorm1d and a
    Dropout in the neck, optionally a LayerNorm ``fc_norm`` and a weight shared by two layers.
    """

    def __init__(self, num_classes: int = 4, width: int = 4, hidden: int = 6, *, fc_norm=False, tied=False):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.ones(()))
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(_Block(width), _Block(width))
        self.layer2 = nn.Sequential(_Block(width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.neck = nn.Sequential(
            nn.Flatten(), nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5)
        )
        self.fc_norm = nn.LayerNorm(hidden) if fc_norm else nn.Identity()
        self.fc = nn.Linear(hidden, num_classes)
        if tied:
            self.layer2[0].body[0].weight = self.layer1[0].body[0].weight

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.neck(self.pool(self.layer2(self.layer1(x))))
        return self.fc(self.fc_norm(x)) * self.logit_scale


def _tiny_net(seed: int, **options) -> _TinyNet:
    return _TinyNet(num_classes=3 + seed % 3, width=3 + seed % 2, hidden=5 + seed % 3, **options)


def _timm_model(name: str) -> nn.Module:
    import timm  # imported here: it takes a second and only three checks need it

    return timm.create_model(name, pretrained=False)


def _freeze_parts(model: nn.Module, prefixes) -> None:
    for name, parameter in model.named_parameters():
        if name.split(".")[0] in prefixes:
            parameter.requires_grad = False


# --------------------------------------------------------------------------- 01_imagenet_features

_PREPROCESS_WEIGHTS = (
    ("ResNet18_Weights.IMAGENET1K_V1", "Inception_V3_Weights.IMAGENET1K_V1"),
    ("EfficientNet_B0_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2"),
)


def _random_photo(seed: int) -> Image.Image:
    """A smooth random RGB picture that is not square (landscape or portrait by seed)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(12, 16, 3, generator=generator) * 255).to(torch.uint8).numpy()
    size = (97, 73) if seed % 2 == 0 else (61, 83)
    return Image.fromarray(pixels).resize(size, Image.BILINEAR)


def _close_images(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Loose enough for a hand-made pipeline that resizes tensors instead of PIL images.
    difference = (a - b).abs()
    return difference.mean().item() < 0.02 and difference.max().item() < 0.3


def _verify_preprocessed(result, image: Image.Image, weights, weights_name: str) -> None:
    transform = weights.transforms()
    expected = transform(image).unsqueeze(0)
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    mean = torch.tensor(transform.mean).view(1, 3, 1, 1)
    std = torch.tensor(transform.std).view(1, 3, 1, 1)
    recipe = (
        f"for {weights_name} that is: resize the shorter side to {resize} "
        f"({transform.interpolation.value}), center-crop {crop}x{crop}, scale pixels to [0, 1] and "
        f"normalize with mean {list(transform.mean)} and std {list(transform.std)}. "
        "Simplest: weights.transforms()(image).unsqueeze(0)"
    )
    if not isinstance(result, torch.Tensor):
        raise AssertionError(f"preprocess must return a torch.Tensor, got {type(result).__name__}; {recipe}")
    if isinstance(result, tv_tensors.TVTensor):
        result = result.as_subclass(torch.Tensor)
    elif type(result) is not torch.Tensor:
        raise AssertionError(f"preprocess must return a plain torch.Tensor, got a {type(result).__name__}")
    shape, wanted = tuple(result.shape), tuple(expected.shape)
    if shape == wanted[1:]:
        raise AssertionError(
            f"preprocess returned shape {list(shape)} without the batch dimension: models expect a batch "
            f"[1, 3, H, W]; add it with .unsqueeze(0)"
        )
    if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3:
        raise AssertionError(
            f"preprocess returned shape {list(shape)}, channels last; PyTorch wants [1, 3, H, W] "
            "(ToTensor / weights.transforms() put channels first)"
        )
    if shape != wanted:
        raise AssertionError(
            f"preprocess returned shape {list(shape)} but {weights_name} expects {list(wanted)}. "
            f"Read the sizes from the weights instead of hard-coding them: {recipe}"
        )
    if result.dtype != torch.float32:
        raise AssertionError(f"preprocess must return float32 values, got {result.dtype}; {recipe}")
    result = result.detach().cpu()
    if _close_images(result, expected):
        return
    unnormalized = expected * std + mean

    def by_hand(*steps):
        return T.Compose([*steps, T.ToTensor(), T.Normalize(transform.mean, transform.std)])(image)[None]

    interpolation = transform.interpolation
    mistakes = [
        (unnormalized, "the values are not normalized: subtract the ImageNet mean and divide by the std"),
        (unnormalized * 255, "the values are raw 0-255 pixels: scale them to [0, 1], then normalize"),
        (
            (unnormalized * 255 - mean) / std,
            "pixels were normalized while still in 0-255: scale them to [0, 1] (ToTensor) first",
        ),
        ((unnormalized - std) / mean, "mean and std are swapped: it is (x - mean) / std"),
        (
            (unnormalized - 0.5) / 0.5,
            "normalized with 0.5 / 0.5 instead of the ImageNet mean and std of the weights",
        ),
        (
            (unnormalized - mean.flip(1)) / std.flip(1),
            "mean and std are in reversed channel order (BGR); use them as given, in RGB order",
        ),
        ((expected - mean) / std, "the image was normalized twice"),
        (
            by_hand(T.Resize(256, interpolation), T.CenterCrop(224)),
            f"the sizes look hard-coded (Resize(256), CenterCrop(224)); these weights want {resize} and "
            f"{crop}: read them from weights.transforms() instead of hard-coding",
        ),
        (
            by_hand(T.Resize((crop, crop), interpolation)),
            f"Resize(({crop}, {crop})) squashes the photo; resize the shorter side to {resize} "
            f"(Resize({resize}) keeps the aspect ratio), then center-crop {crop}",
        ),
        (
            by_hand(T.Resize(crop, interpolation), T.CenterCrop(crop)),
            f"the photo was resized to {crop} before cropping; resize the shorter side to {resize} first",
        ),
    ]
    for candidate, explanation in mistakes:
        if _close_images(result, candidate):
            raise AssertionError(f"preprocess with {weights_name}: {explanation}")
    difference = (result - expected).abs().mean().item()
    raise AssertionError(
        f"preprocess gives different values from weights.transforms() for {weights_name} "
        f"(mean absolute difference {difference:.3f}); {recipe}"
    )


def check_preprocess(fn, seed: int = 0) -> None:
    """Check exercise ``preprocess`` of 01_imagenet_features.

    Compares with ``weights.transforms()`` batched, for two weights with different sizes.
    """
    with _checking(fn, "preprocess", seed):
        image = _random_photo(seed)
        for weights_name in _PREPROCESS_WEIGHTS[seed % 2]:
            weights = torchvision.models.get_weight(weights_name)
            result = _call(fn, "preprocess", image, weights, context=f"image, {weights_name}")
            _verify_preprocessed(result, image, weights, weights_name)


_CATEGORIES = ["ant", "bee", "wasp", "moth", "beetle", "spider", "ladybug", "dragonfly", "cricket"]


def _read_pairs(result, k: int, shape_note: str, categories) -> list[tuple[str, float]]:
    if type(result) not in (list, tuple):
        raise AssertionError(
            f"top_k must return a list of (category, probability) pairs, got {type(result).__name__}"
        )
    if len(result) != k:
        extra = " (it returned every class; keep only the k best)" if len(result) == len(categories) else ""
        raise AssertionError(
            f"top_k{shape_note} with k={k} returned {len(result)} pairs, expected {k}{extra}"
        )
    pairs = []
    for item in result:
        if type(item) not in (tuple, list) or len(item) != 2:
            raise AssertionError(
                f"each item of top_k's list must be a (category, probability) pair, got {item!r}"
            )
        name, probability = item
        if isinstance(name, str) and type(name) is not str:
            raise AssertionError(f"top_k's categories must be plain str, got {type(name).__name__}")
        if type(name) is not str:
            raise AssertionError(
                f"top_k returned {name!r} ({type(name).__name__}) as a category: return the name, "
                "categories[index], not the index"
            )
        if name not in categories:
            raise AssertionError(f"top_k returned {name!r}, which is not one of the categories given")
        if type(probability) is torch.Tensor and probability.numel() == 1:
            probability = probability.item()
        pairs.append((name, _plain_number(probability, "top_k's probability", "float")))
    return pairs


def _verify_top_k(result, logits: torch.Tensor, categories, k: int, shape_note: str) -> None:
    flat = logits.reshape(-1).double()
    probabilities = torch.softmax(flat, dim=0)
    order = torch.argsort(probabilities, descending=True).tolist()
    expected = [(categories[i], probabilities[i].item()) for i in order[:k]]
    pairs = _read_pairs(result, k, shape_note, categories)
    names = [name for name, _ in pairs]
    values = [value for _, value in pairs]
    index = {name: i for i, name in enumerate(categories)}

    def matches(wanted):
        return all(
            math.isclose(v, w, rel_tol=1e-4, abs_tol=1e-5) for v, w in zip(values, wanted, strict=True)
        )

    if names == [name for name, _ in expected] and matches([p for _, p in expected]):
        return
    lowest = [categories[i] for i in order[::-1][:k]]
    if sorted(names) == sorted(lowest):
        raise AssertionError(f"top_k{shape_note} returned the k least likely classes; take the highest ones")
    if names == [name for name, _ in expected][::-1]:
        raise AssertionError(
            f"top_k{shape_note} lists the lowest first; sort highest first (torch.topk does)"
        )
    if matches([flat[index[n]].item() for n in names]):
        raise AssertionError(
            f"top_k{shape_note} returned raw logits, not probabilities; turn them into probabilities "
            "with torch.softmax first"
        )
    if all(math.isclose(v, 1.0, abs_tol=1e-6) for v in values) and logits.dim() == 2:
        raise AssertionError(
            f"top_k{shape_note} gives probability 1.0 everywhere: softmax ran over the batch dimension "
            "of the [1, C] logits; flatten them first or use softmax(dim=-1)"
        )
    if matches([100 * probabilities[index[n]].item() for n in names]):
        raise AssertionError(f"top_k{shape_note} returned percentages; return probabilities in [0, 1]")
    if sorted(names) == sorted(name for name, _ in expected):
        raise AssertionError(f"top_k{shape_note} has the right classes in the wrong order; highest first")
    shown = [(name, round(p, 4)) for name, p in expected]
    raise AssertionError(
        f"top_k{shape_note} returned {[(n, round(v, 4)) for n, v in pairs]}, expected {shown}"
    )


def check_top_k(fn, seed: int = 0) -> None:
    """Check exercise ``top_k`` of 01_imagenet_features: softmax probabilities, highest first."""
    with _checking(fn, "top_k", seed):
        generator = torch.Generator().manual_seed(seed)
        categories = list(_CATEGORIES)
        logits = torch.randn(len(categories), generator=generator) * 2
        k = 2 + seed % 3
        result = _call(fn, "top_k", logits, categories, k=k, context=f"logits of shape [{len(categories)}]")
        _verify_top_k(result, logits, categories, k, "")
        batched = logits.unsqueeze(0)
        shape_note = f" with logits of shape {list(batched.shape)}"
        result = _call(
            fn,
            "top_k",
            batched,
            categories,
            k=k,
            context=f"logits of shape {list(batched.shape)}",
            hint="logits straight from the model have shape [1, C]; flatten them first (logits.reshape(-1))",
        )
        _verify_top_k(result, batched, categories, k, shape_note)
        result = _call(
            fn,
            "top_k",
            logits,
            categories,
            context="logits, categories",
            hint="give k a default value: def top_k(logits, categories, k=5)",
        )
        if type(result) in (list, tuple) and len(result) != 5:
            raise AssertionError(f"top_k without k returned {len(result)} pairs: the default must be k=5")
        _verify_top_k(result, logits, categories, 5, " with the default k")


# --------------------------------------------------------------------------- 02_freezing


def check_freeze(fn, seed: int = 0) -> None:
    """Check exercise ``freeze`` of 02_freezing: every parameter frozen, model returned."""
    with _checking(fn, "freeze", seed):
        for description, model in (
            ("a small CNN", _tiny_net(seed)),
            ("timm's test_vit", _timm_model("test_vit")),
        ):
            result = _call(fn, "freeze", model, context=description)
            _expect_model_back(result, model, "freeze")
            still = _trainable_names(model)
            if not still:
                continue
            own = {name for name, _ in model.named_parameters(recurse=False)}
            if set(still) <= own:
                raise AssertionError(
                    f"freeze left {_names(still)} of {description} trainable: parameters registered on the "
                    "model itself are in no child module. Loop over model.parameters()"
                )
            total = len(list(model.parameters()))
            raise AssertionError(
                f"freeze left {len(still)} of {total} parameters of {description} trainable: "
                f"{_names(still)}. Set requires_grad = False on every one of model.parameters() "
                "(it includes nested layers)"
            )


def _count_variants(model: nn.Module) -> dict[str, tuple[int, int]]:
    parameters = list(model.parameters())
    every = [p for _, p in model.named_parameters(remove_duplicate=False)]
    return {
        "right": (sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)),
        "tensors": (sum(1 for p in parameters if p.requires_grad), len(parameters)),
        "shared twice": (sum(p.numel() for p in every if p.requires_grad), sum(p.numel() for p in every)),
        "frozen": (
            sum(p.numel() for p in parameters if not p.requires_grad),
            sum(p.numel() for p in parameters),
        ),
    }


def check_count_parameters(fn, seed: int = 0) -> None:
    """Check exercise ``count_parameters`` of 02_freezing: ``(trainable, total)`` scalar counts."""
    with _checking(fn, "count_parameters", seed):
        model = _tiny_net(seed, tied=True)
        _freeze_parts(model, {"conv1", "bn1", "neck"} if seed % 2 == 0 else {"layer2", "fc"})
        result = _call(fn, "count_parameters", model, context="model")
        if type(result) not in (tuple, list) or len(result) != 2:
            raise AssertionError(
                f"count_parameters must return a pair (trainable, total), got {type(result).__name__}"
            )
        got = tuple(_plain_number(value, "count_parameters", "int") for value in result)
        variants = _count_variants(model)
        trainable, total = variants["right"]
        if got == (trainable, total):
            return
        if got == (total, trainable):
            raise AssertionError(
                "count_parameters returned (total, trainable); the order is (trainable, total)"
            )
        if got == variants["tensors"]:
            raise AssertionError(
                "count_parameters counted parameter tensors, not numbers: add up p.numel() for each parameter"
            )
        if got == variants["frozen"]:
            raise AssertionError(
                "count_parameters counted the frozen parameters as trainable; "
                "trainable means requires_grad=True"
            )
        if got[0] == got[1] == total:
            raise AssertionError(
                "count_parameters' trainable count must only include p.requires_grad parameters"
            )
        state_total = sum(t.numel() for t in model.state_dict().values())
        if got[1] == state_total:
            raise AssertionError(
                "count_parameters' total includes buffers (BatchNorm running statistics) or counts a shared "
                "weight twice: count model.parameters(), not state_dict()"
            )
        if got in (variants["shared twice"], (trainable, variants["shared twice"][1])):
            raise AssertionError(
                "count_parameters counted a weight shared by two layers twice; model.parameters() lists "
                "each parameter once"
            )
        raise AssertionError(
            f"count_parameters returned {got}, expected (trainable, total) = {(trainable, total)}"
        )


def _inside_batchnorm(model: nn.Module) -> set[str]:
    """Names of every BatchNorm layer and everything nested in one (timm's BatchNormAct2d holds its act)."""
    bn_names = [name for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
    return {
        name
        for name, _ in model.named_modules()
        if any(name == bn or name.startswith(bn + ".") for bn in bn_names)
    }


def _verify_batchnorm_frozen(fn, model: nn.Module, description: str) -> None:
    model.train()
    inside_bn = _inside_batchnorm(model)
    grad_before = {n: p.requires_grad for n, p in model.named_parameters()}
    result = _call(fn, "freeze_batchnorm", model, context=description)
    _expect_model_back(result, model, "freeze_batchnorm")
    modules = dict(model.named_modules())
    batchnorms = {n: m for n, m in modules.items() if isinstance(m, _BatchNorm)}
    still = [n for n, m in batchnorms.items() if m.training]
    if still:
        kinds = {type(batchnorms[n]) for n in still}
        if kinds == {nn.BatchNorm1d}:
            hint = (
                f"your code skipped the BatchNorm1d layer(s) {_names(still)}; test "
                "isinstance(module, nn.modules.batchnorm._BatchNorm) (or list BatchNorm1d and BatchNorm2d)"
            )
        elif all(type(batchnorms[n]) not in (nn.BatchNorm1d, nn.BatchNorm2d) for n in still):
            names = sorted({k.__name__ for k in kinds})
            hint = (
                f"{', '.join(names)} in {description} is a subclass of BatchNorm2d; "
                "use isinstance(module, nn.BatchNorm2d) rather than comparing types"
            )
        else:
            hint = "call .eval() on every BatchNorm layer (after model.train(), which switched them on)"
        raise AssertionError(
            f"freeze_batchnorm left BatchNorm layers of {description} in training mode ({_names(still)}), "
            f"so their running statistics keep updating: {hint}"
        )
    switched = [n for n, m in modules.items() if n not in inside_bn and not m.training]
    if switched:
        dropouts = [n for n in switched if isinstance(modules[n], nn.Dropout)]
        if dropouts or "" in switched:
            raise AssertionError(
                "freeze_batchnorm put the whole model in eval mode (model.eval()): Dropout is switched off "
                "too and training would lose its regularization. Call .eval() only on the BatchNorm layers"
            )
        raise AssertionError(
            f"freeze_batchnorm switched non-BatchNorm layers to eval mode: {_names(switched)}"
        )
    bn_trainable = [
        f"{n}.{p}"
        for n, m in batchnorms.items()
        for p, q in m.named_parameters(recurse=False)
        if q.requires_grad
    ]
    if bn_trainable:
        raise AssertionError(
            f"freeze_batchnorm left the BatchNorm affine parameters trainable ({_names(bn_trainable)}): "
            "set requires_grad = False on each BatchNorm layer's weight and bias"
        )
    changed = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad != grad_before[n] and n.rpartition(".")[0] not in inside_bn
    ]
    if changed:
        raise AssertionError(
            f"freeze_batchnorm changed requires_grad of parameters outside BatchNorm: {_names(changed)}; "
            "only BatchNorm layers should be touched"
        )


def check_freeze_batchnorm(fn, seed: int = 0) -> None:
    """Check exercise ``freeze_batchnorm`` of 02_freezing on a small CNN and on timm's test_efficientnet."""
    with _checking(fn, "freeze_batchnorm", seed):
        for description, model in (
            ("a small CNN with BatchNorm2d, BatchNorm1d and Dropout", _tiny_net(seed, fc_norm=True)),
            ("timm's test_efficientnet", _timm_model("test_efficientnet")),
        ):
            _verify_batchnorm_frozen(fn, model, description)


# --------------------------------------------------------------------------- 03_replacing_the_head


def _replace_head_models(seed: int):
    """(description, factory) pairs: a ResNet-style ``fc``, a ``classifier`` Sequential, and timm."""
    if seed % 2 == 0:
        return [
            ("torchvision resnet18", lambda: torchvision.models.resnet18(weights=None)),
            ("torchvision mobilenet_v3_small", lambda: torchvision.models.mobilenet_v3_small(weights=None)),
            ("timm test_efficientnet", lambda: _timm_model("test_efficientnet")),
        ]
    return [
        ("torchvision efficientnet_b0", lambda: torchvision.models.efficientnet_b0(weights=None)),
        ("timm test_convnext", lambda: _timm_model("test_convnext")),
        ("a small CNN", lambda: _tiny_net(seed)),
    ]


def _verify_new_head(
    model: nn.Module, head_name: str, old_head: nn.Linear, old_parent, num_classes: int, where: str
):
    """The module at ``head_name`` is a fresh, trainable Linear(old in_features, num_classes)."""
    parent_name = head_name.rpartition(".")[0]
    if parent_name and _submodule(model, parent_name) is not old_parent:
        held = ", ".join(type(m).__name__ for m in old_parent.children())
        raise AssertionError(
            f"{where}: you replaced the whole model.{parent_name} ({type(old_parent).__name__} of "
            f"{held}), so its other layers (Dropout, ...) are gone. Replace only its final Linear, "
            f"model.{head_name}"
        )
    head = _submodule(model, head_name)
    if not isinstance(head, nn.Linear):
        found = "nothing" if head is None else type(head).__name__
        raise AssertionError(f"{where}: model.{head_name} should be the new nn.Linear head, found {found}")
    if head is old_head and "." in head_name and head_name in dict(model.named_children()):
        parent, _, child = head_name.rpartition(".")
        raise AssertionError(
            f"{where}: setattr(model, {head_name!r}, ...) adds a new layer literally named {head_name!r} and "
            f"leaves the real head alone; set it on the parent: "
            f"setattr(model.get_submodule({parent!r}), {child!r}, new_head)"
        )
    if head is old_head:
        if head.out_features == num_classes:
            raise AssertionError(
                f"{where}: you changed out_features of the old head in place, but its weight is still "
                f"{list(head.weight.shape)}, so it still outputs {head.weight.shape[0]} values. Create a new "
                f"nn.Linear({old_head.in_features}, {num_classes}) instead"
            )
        raise AssertionError(
            f"{where}: model.{head_name} is still the old head; assign a new nn.Linear there"
        )
    if head.in_features != old_head.in_features or head.weight.shape[1] != old_head.in_features:
        raise AssertionError(
            f"{where}: the new head takes in_features={head.in_features} but the features feeding it have "
            f"{old_head.in_features} values; use the old head's in_features"
        )
    if head.out_features != num_classes or head.weight.shape[0] != num_classes:
        raise AssertionError(
            f"{where}: the new head has {head.weight.shape[0]} outputs, expected num_classes={num_classes}"
        )
    frozen = [n for n, p in head.named_parameters() if not p.requires_grad]
    if frozen:
        raise AssertionError(
            f"{where}: the new head is frozen ({_names(frozen)}); a fresh nn.Linear is trainable, so "
            "do not freeze after swapping it in"
        )


def check_replace_head(fn, seed: int = 0) -> None:
    """Check exercise ``replace_head`` of 03_replacing_the_head on ResNet, ``classifier`` models and timm."""
    with _checking(fn, "replace_head", seed):
        for index, (description, factory) in enumerate(_replace_head_models(seed)):
            model = factory().eval()
            num_classes = 2 + (seed + index) % 5
            head_name, old_head = find_head(model)
            old_parent = model.get_submodule(head_name.rpartition(".")[0])
            where = f"replace_head on {description} (head: model.{head_name})"
            before = {n: (p, p.requires_grad) for n, p in model.named_parameters()}
            dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
            hint = ""
            if description.startswith("timm"):
                hint = "timm models offer model.reset_classifier(num_classes) and model.get_classifier()"
            elif "." in head_name:
                hint = f"here the head is the last layer of a Sequential: model.{head_name}"
            result = _call(
                fn, "replace_head", model, num_classes, context=f"<{description}>, {num_classes}", hint=hint
            )
            _expect_model_back(result, model, "replace_head")
            _verify_new_head(model, head_name, old_head, old_parent, num_classes, where)
            after = dict(model.named_parameters())
            changed = [
                n
                for n, (p, grad) in before.items()
                if not n.startswith(head_name + ".") and (after.get(n) is not p or p.requires_grad != grad)
            ]
            if changed:
                raise AssertionError(f"{where}: only the head may change, but {_names(changed)} changed too")
            kept = {id(m) for m in model.modules()}
            if any(id(m) not in kept for m in dropouts):
                raise AssertionError(
                    f"{where}: a Dropout layer disappeared; replace only the final Linear, "
                    "not the block around it"
                )
            with torch.no_grad():
                output = model(torch.randn(2, 3, 32, 32))
            if tuple(output.shape) != (2, num_classes):
                raise AssertionError(
                    f"{where}: the model now outputs shape {list(output.shape)}, expected [2, {num_classes}]"
                )


def check_build_feature_extractor(fn, seed: int = 0) -> None:
    """Check exercise ``build_feature_extractor`` of 03_replacing_the_head: only the new head trains."""
    with _checking(fn, "build_feature_extractor", seed):
        if seed % 2 == 0:
            description, model = "a small CNN", _tiny_net(seed)
        else:
            description, model = "torchvision resnet18", torchvision.models.resnet18(weights=None)
        num_classes = 2 + seed % 4
        head_name, old_head = find_head(model)
        where = f"build_feature_extractor on {description}"
        result = _call(
            fn, "build_feature_extractor", model, num_classes, context=f"<{description}>, {num_classes}"
        )
        _expect_model_back(result, model, "build_feature_extractor")
        head = _submodule(model, head_name)
        if (
            isinstance(head, nn.Linear)
            and head is not old_head
            and not any(p.requires_grad for p in head.parameters())
        ):
            raise AssertionError(
                f"{where}: the new head is frozen, so nothing would learn. Freeze first, then swap in the "
                "head (a fresh nn.Linear is trainable)"
            )
        _verify_new_head(model, head_name, old_head, model, num_classes, where)
        head_ids = {id(p) for p in head.parameters()}
        trainable = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in head_ids]
        if trainable:
            raise AssertionError(
                f"{where}: backbone parameters are still trainable ({_names(trainable)}); freeze every "
                "parameter before replacing the head"
            )


# --------------------------------------------------------------------------- 04_training_the_head


def check_trainable_parameters(fn, seed: int = 0) -> None:
    """Check exercise ``trainable_parameters`` of 04_training_the_head: a list in model order."""
    with _checking(fn, "trainable_parameters", seed):
        model = _tiny_net(seed, tied=True)
        _freeze_parts(model, {"conv1", "bn1", "neck"} if seed % 2 == 0 else {"logit_scale", "layer2"})
        names = {id(p): n for n, p in model.named_parameters()}
        expected = [p for p in model.parameters() if p.requires_grad]
        result = _call(fn, "trainable_parameters", model, context="model")
        if type(result) is not list:
            raise AssertionError(
                f"trainable_parameters must return a plain list, got {type(result).__name__}: a generator "
                "or filter is used up after one pass; wrap it in list(...)"
            )
        if result and type(result[0]) is str:
            raise AssertionError("trainable_parameters returned names; return the parameters themselves")
        if result and type(result[0]) is tuple:
            raise AssertionError(
                "trainable_parameters returned (name, parameter) pairs; return just the parameters"
            )
        ids = [id(p) for p in result]
        strangers = [p for p in result if id(p) not in names]
        if strangers:
            raise AssertionError(
                f"trainable_parameters returned {type(strangers[0]).__name__} objects that are not the "
                "model's parameters; return the parameters themselves (they can be copied by mistake)"
            )
        frozen = [names[id(p)] for p in result if not p.requires_grad]
        if frozen:
            raise AssertionError(
                f"trainable_parameters includes frozen parameters ({_names(frozen)}); keep only requires_grad"
            )
        if len(set(ids)) != len(ids):
            twice = sorted({names[i] for i in ids if ids.count(i) > 1})
            raise AssertionError(
                f"trainable_parameters lists {_names(twice)} more than once (a weight shared by two layers); "
                "model.parameters() yields each parameter once"
            )
        missing = [names[id(p)] for p in expected if id(p) not in set(ids)]
        if missing:
            raise AssertionError(f"trainable_parameters misses trainable parameters: {_names(missing)}")
        if ids != [id(p) for p in expected]:
            raise AssertionError(
                "trainable_parameters has the right parameters in the wrong order; keep model order"
            )


def check_make_optimizer(fn, seed: int = 0) -> None:
    """Check exercise ``make_optimizer`` of 04_training_the_head: Adam over the trainable parameters."""
    with _checking(fn, "make_optimizer", seed):
        model = _tiny_net(seed)
        _freeze_parts(model, {"logit_scale", "conv1", "bn1", "layer1", "neck"})
        names = {id(p): n for n, p in model.named_parameters()}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        lr = (0.01, 0.05, 3e-4)[seed % 3]
        default_hint = "give lr a default value: def make_optimizer(model, lr=1e-3)"
        for kwargs, wanted in (({"lr": lr}, lr), ({}, 1e-3)):
            context = f"model, lr={lr}" if kwargs else "model"
            optimizer = _call(
                fn, "make_optimizer", model, context=context, hint="" if kwargs else default_hint, **kwargs
            )
            if type(optimizer) is not torch.optim.Adam:
                raise AssertionError(
                    f"make_optimizer must return torch.optim.Adam, got {type(optimizer).__name__}"
                )
            ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
            frozen = [names.get(i, "?") for i in ids if i not in trainable]
            if frozen:
                raise AssertionError(
                    f"make_optimizer handed Adam {len(frozen)} frozen parameters ({_names(frozen)}); "
                    "give it only the trainable ones (trainable_parameters(model))"
                )
            if len(set(ids)) != len(ids) or set(ids) != trainable:
                missing = [names[i] for i in trainable - set(ids)]
                raise AssertionError(
                    f"make_optimizer must give Adam every trainable parameter exactly once; missing "
                    f"{_names(missing) or 'none'}, {len(ids) - len(set(ids))} repeated"
                )
            rates = [group["lr"] for group in optimizer.param_groups]
            if not all(type(r) in (float, int) and math.isclose(r, wanted, rel_tol=1e-9) for r in rates):
                note = " (the lr argument was ignored)" if kwargs and rates and rates[0] == 1e-3 else ""
                raise AssertionError(f"make_optimizer({context}) set lr={rates}, expected {wanted}{note}")


_DEVICE_HINT = "move each batch to the device given as argument (inputs.to(device)), not to a global one"


def _regression_batches(seed: int):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(10, 6, generator=generator)
    targets = torch.randint(0, 3, (10,), generator=generator)
    # The last, smaller batch gets shifted inputs so its loss differs clearly from the others'.
    inputs[8:] = inputs[8:] * 3 + 2
    return DataLoader(TensorDataset(inputs, targets), batch_size=4, shuffle=False)


def _small_classifier() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _simulate_epoch(model: nn.Module, loader, lr: float, zero_grad: bool) -> list[tuple[float, int]]:
    """Train ``model`` for one epoch with SGD; return (loss, batch size) per batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    losses = []
    for inputs, targets in loader:
        if zero_grad:
            optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append((loss.item(), len(targets)))
    return losses


def _same_weights(model: nn.Module, other: nn.Module) -> bool:
    theirs = dict(other.named_parameters())
    return all(torch.allclose(p, theirs[n], atol=1e-5, rtol=1e-4) for n, p in model.named_parameters())


def check_train_one_epoch(fn, seed: int = 0) -> None:
    """Check exercise ``train_one_epoch`` of 04_training_the_head.

    Batches of 4, 4 and 2 samples, SGD without momentum: forgetting zero_grad shows in the weights.
    """
    with _checking(fn, "train_one_epoch", seed):
        loader = _regression_batches(seed)
        model = _small_classifier().eval()  # as left behind by evaluate
        start = copy.deepcopy(model)
        lr = 0.5
        expected_model = copy.deepcopy(start)
        batch_losses = _simulate_epoch(expected_model, loader, lr, zero_grad=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        result = _call(
            fn,
            "train_one_epoch",
            model,
            loader,
            optimizer,
            nn.CrossEntropyLoss(),
            torch.device("cpu"),
            context="model, loader, optimizer, loss_fn, device",
            hint=_DEVICE_HINT,
            hint_when="device",
        )
        loss = _plain_number(result, "train_one_epoch", "float")
        tracked = int(model[1].num_batches_tracked)
        if tracked == 0:
            raise AssertionError(
                "train_one_epoch ran the model in eval mode: call model.train() at the start (the model may "
                "come from evaluate, which left it in eval mode)"
            )
        if _same_weights(model, start):
            raise AssertionError(
                "train_one_epoch did not change the weights: call optimizer.step() after loss.backward() "
                "for every batch (and zero the gradients before backward, not between backward and step)"
            )
        if not _same_weights(model, expected_model):
            accumulating = copy.deepcopy(start)
            _simulate_epoch(accumulating, loader, lr, zero_grad=False)
            if _same_weights(model, accumulating):
                raise AssertionError(
                    "train_one_epoch never resets the gradients, so they pile up from batch to batch: call "
                    "optimizer.zero_grad() at the start of every batch"
                )
            raise AssertionError(
                "train_one_epoch's weights after one epoch differ from one step per batch; each batch: "
                "optimizer.zero_grad(), outputs = model(inputs), loss = loss_fn(outputs, targets), "
                "loss.backward(), optimizer.step()"
            )
        if tracked != len(batch_losses):
            raise AssertionError(
                f"train_one_epoch ran {tracked} training-mode forward passes for {len(batch_losses)} "
                "batches; run the model once per batch"
            )
        samples = sum(size for _, size in batch_losses)
        per_sample = sum(value * size for value, size in batch_losses) / samples
        if math.isclose(loss, per_sample, rel_tol=1e-4, abs_tol=1e-6):
            return
        batch_mean = sum(value for value, _ in batch_losses) / len(batch_losses)
        mistakes = [
            (
                batch_mean,
                "averaged the batch losses, but the last batch is smaller; weight each batch's loss by its "
                "size (loss.item() * inputs.size(0)) and divide by the number of samples",
            ),
            (batch_losses[-1][0], "returned the last batch's loss; return the mean loss over all samples"),
            (per_sample * samples, "returned the summed loss; divide by the number of samples"),
            (
                per_sample * samples / len(batch_losses),
                "divided by the number of batches; divide by the number of samples",
            ),
        ]
        for value, explanation in mistakes:
            if math.isclose(loss, value, rel_tol=1e-4, abs_tol=1e-6):
                raise AssertionError(f"train_one_epoch {explanation}")
        raise AssertionError(
            f"train_one_epoch returned {loss:.6f}, expected the mean loss per sample {per_sample:.6f}"
        )


def _evaluation_setup(seed: int):
    """A model with non-trivial BatchNorm statistics and Dropout, and labels making accuracy 0.7."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    model[1].running_mean.copy_(torch.randn(16, generator=generator))
    model[1].running_var.copy_(torch.rand(16, generator=generator) + 0.5)
    inputs = torch.randn(10, 6, generator=generator)
    with torch.no_grad():
        predictions = copy.deepcopy(model).eval()(inputs).argmax(dim=1)
    # Batches of 4, 4 and 2 with 4, 2 and 1 right: 7/10 overall, while per-batch accuracies average 2/3.
    right = torch.tensor([1, 1, 1, 1, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    targets = torch.where(right, predictions, (predictions + 1 + seed % 2) % 3)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=4, shuffle=False)
    return model.train(), loader


def check_evaluate(fn, seed: int = 0) -> None:
    """Check exercise ``evaluate`` of 04_training_the_head: accuracy in eval mode, no gradients."""
    with _checking(fn, "evaluate", seed):
        model, loader = _evaluation_setup(seed)
        expected = 0.7
        state = {n: t.clone() for n, t in model.state_dict().items()}
        grad_modes = []
        hook = model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
        try:
            result = _call(
                fn,
                "evaluate",
                model,
                loader,
                torch.device("cpu"),
                context="model, loader, device",
                hint=_DEVICE_HINT,
                hint_when="device",
            )
        finally:
            hook.remove()
        accuracy = _plain_number(result, "evaluate", "float")
        changed_stats = [n for n, b in model.named_buffers() if not torch.equal(b, state[n])]
        if changed_stats:
            raise AssertionError(
                "evaluate changed the BatchNorm running statistics, so it ran the model in training mode "
                "(Dropout was active too): call model.eval() first"
            )
        if any(grad_modes):
            raise AssertionError(
                "evaluate ran the model with gradient tracking on, which wastes memory and time: wrap the "
                "loop in `with torch.no_grad():`"
            )
        if any(p.grad is not None for p in model.parameters()):
            raise AssertionError("evaluate computed gradients (param.grad is set); it must not call backward")
        if any(not torch.equal(p, state[n]) for n, p in model.named_parameters()):
            raise AssertionError("evaluate changed the model's weights; it must only measure")
        if math.isclose(accuracy, expected, abs_tol=1e-6):
            return
        mistakes = [
            (100 * expected, "returned a percentage; return a fraction in [0, 1] (correct / total)"),
            (7, "returned the number of correct predictions; divide it by the number of samples"),
            (
                2 / 3,
                "averaged the per-batch accuracies, but the last batch is smaller; count correct predictions "
                "over all samples and divide by the number of samples",
            ),
            (7 / 3, "divided by the number of batches; divide by the number of samples"),
            (1 - expected, "counted the wrong predictions; accuracy counts the right ones"),
        ]
        for value, explanation in mistakes:
            if math.isclose(accuracy, value, abs_tol=1e-6):
                raise AssertionError(f"evaluate {explanation}")
        raise AssertionError(
            f"evaluate returned {accuracy}, expected accuracy {expected}: compare outputs.argmax(dim=1) with "
            "the targets, add up the matches over all batches and divide by the number of samples"
        )


# --------------------------------------------------------------------------- 05_fine_tuning


def check_unfreeze(fn, seed: int = 0) -> None:
    """Check exercise ``unfreeze`` of 05_fine_tuning: named submodules (dotted names too) become trainable."""
    with _checking(fn, "unfreeze", seed):
        model = _tiny_net(seed, fc_norm=True)
        for parameter in model.parameters():
            parameter.requires_grad = False
        for parameter in model.neck.parameters():  # trainable already, not named: must stay so
            parameter.requires_grad = True
        module_names = ["layer2", "layer1.1", "fc"] if seed % 2 == 0 else ["fc", "layer1.0"]
        before = {n: p.requires_grad for n, p in model.named_parameters()}

        def named(parameter_name: str) -> bool:
            return any(parameter_name.startswith(m + ".") for m in module_names)

        result = _call(
            fn,
            "unfreeze",
            model,
            module_names,
            context=f"model, {module_names}",
            hint="names may be dotted, like 'layer1.1': model.get_submodule(name) finds them",
        )
        _expect_model_back(result, model, "unfreeze")
        now = {n: p.requires_grad for n, p in model.named_parameters()}
        still_frozen = [n for n in now if named(n) and not now[n]]
        if still_frozen:
            raise AssertionError(
                f"unfreeze left parameters inside the named modules frozen: {_names(still_frozen)}; "
                "module.parameters() includes nested layers"
            )
        woken = [n for n in now if not named(n) and now[n] and not before[n]]
        if woken:
            if all(n.startswith("fc_norm.") for n in woken):
                raise AssertionError(
                    f"unfreeze also unfroze {_names(woken)}: 'fc_norm' starts with 'fc' but is another "
                    "module; match whole module names (model.get_submodule(name))"
                )
            raise AssertionError(
                f"unfreeze made parameters outside {module_names} trainable: {_names(woken)}; "
                "only the named modules should change"
            )
        refrozen = [n for n in now if not named(n) and before[n] and not now[n]]
        if refrozen:
            raise AssertionError(
                f"unfreeze froze parameters that were trainable ({_names(refrozen)}); leave everything "
                "outside the named modules as it was"
            )


def _read_groups(result) -> list[tuple[list, object]]:
    """(params, lr) per group; generators (of groups or of parameters) are read exactly once."""
    if isinstance(result, (dict, str)) or not hasattr(result, "__iter__"):
        raise AssertionError(
            f"param_groups must return a list of dicts, one per group, got {type(result).__name__}"
        )
    groups = []
    for group in list(result):
        if type(group) is not dict:
            raise AssertionError(f"each param group must be a dict, got {type(group).__name__}")
        if "params" not in group or "lr" not in group:
            raise AssertionError(
                f"each param group needs 'params' and 'lr', got keys {sorted(map(str, group))}"
            )
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        groups.append((params, group["lr"]))
    return groups


def check_param_groups(fn, seed: int = 0) -> None:
    """Check exercise ``param_groups`` of 05_fine_tuning: head at head_lr, other trainable at backbone_lr."""
    with _checking(fn, "param_groups", seed):
        model = _tiny_net(seed)
        _freeze_parts(model, {"conv1", "bn1", "layer1"})
        head_lr, backbone_lr = (1e-2, 1e-4) if seed % 2 == 0 else (3e-3, 5e-5)
        result = _call(
            fn,
            "param_groups",
            model,
            head_lr,
            backbone_lr,
            context=f"model, head_lr={head_lr}, backbone_lr={backbone_lr}",
        )
        groups = _read_groups(result)
        names = {id(p): n for n, p in model.named_parameters()}
        frozen_ids = {id(p) for p in model.parameters() if not p.requires_grad}
        head_ids = [id(p) for p in model.fc.parameters()]
        backbone_ids = [id(p) for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        rates: dict[int, float] = {}
        for params, lr in groups:
            if type(lr) not in (int, float):
                raise AssertionError(f"a param group's 'lr' must be a plain number, got {type(lr).__name__}")
            for parameter in params:
                if id(parameter) not in names:
                    raise AssertionError(
                        "param_groups put something that is not a model parameter in 'params'"
                    )
                if id(parameter) in rates:
                    raise AssertionError(
                        f"param_groups puts {names[id(parameter)]} in two groups; each parameter belongs "
                        "to exactly one group (the optimizer refuses duplicates)"
                    )
                rates[id(parameter)] = lr
        frozen = [names[i] for i in rates if i in frozen_ids]
        if frozen:
            raise AssertionError(
                f"param_groups includes frozen parameters ({_names(frozen)}); leave them out"
            )
        missing_head = [names[i] for i in head_ids if i not in rates]
        if missing_head:
            raise AssertionError(f"param_groups misses the head's parameters ({_names(missing_head)})")
        missing = [names[i] for i in backbone_ids if i not in rates]
        if missing:
            raise AssertionError(f"param_groups misses trainable backbone parameters ({_names(missing)})")
        head_rates = {rates[i] for i in head_ids}
        backbone_rates = {rates[i] for i in backbone_ids}
        if head_rates == {backbone_lr} and backbone_rates == {head_lr}:
            raise AssertionError(
                "param_groups swapped the rates: the head gets head_lr, the backbone backbone_lr"
            )
        if not all(math.isclose(r, head_lr) for r in head_rates):
            raise AssertionError(f"param_groups gives the head lr {sorted(head_rates)}, expected {head_lr}")
        wrong = [i for i in backbone_ids if not math.isclose(rates[i], backbone_lr)]
        if wrong:
            raise AssertionError(
                f"param_groups gives {_names(names[i] for i in wrong)} lr {rates[wrong[0]]}, expected "
                f"backbone_lr={backbone_lr} (every trainable parameter outside the head)"
            )


# (targets, val_fraction, validation images expected per class); the hidden seeds use the second list.
_SPLIT_CASES = {
    0: [([0] * 10 + [1] * 30 + [2] * 4, 0.2, {0: 2, 1: 6, 2: 1})],
    1: [
        (
            [2, 0, 1, 0, 2, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2, 1, 1, 0, 2, 1] * 3 + [3],
            0.3,
            {0: 5, 1: 7, 2: 5, 3: 0},
        ),
        ([1, 0, 1, 0, 1], 0.9, {0: 1, 1: 2}),
        ([1] * 12 + [0] * 7 + [2] * 2, 0.25, {0: 2, 1: 3, 2: 1}),
    ],
}


def _global_random_states():
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()


def _same_random_states(before, after) -> bool:
    (python_before, numpy_before, torch_before), (python_after, numpy_after, torch_after) = before, after
    return (
        python_before == python_after
        and all(np.array_equal(a, b) for a, b in zip(numpy_before, numpy_after, strict=True))
        and torch.equal(torch_before, torch_after)
    )


def _read_split(result) -> tuple[list[int], list[int]]:
    """The two index lists as plain ints; explain any other return shape or type."""
    if not isinstance(result, tuple) or len(result) != 2:
        got = type(result).__name__
        message = f"split_indices must return a pair (train_indices, val_indices), got {got}"
        if isinstance(result, (tuple, list)):
            message += f" of length {len(result)}"
        if isinstance(result, list) and len(result) == 2:
            message += "; end with `return train_indices, val_indices` to return a tuple"
        raise AssertionError(message)
    for what, indices in zip(("train_indices", "val_indices"), result, strict=True):
        if isinstance(indices, torch.Tensor):
            raise AssertionError(f"{what} is a tensor; return a list of Python ints (use .tolist())")
        if isinstance(indices, np.ndarray):
            raise AssertionError(f"{what} is a NumPy array; return a list of Python ints (use .tolist())")
        if type(indices) is not list:
            raise AssertionError(f"{what} must be a list, got {type(indices).__name__}")
        for index in indices:
            if isinstance(index, torch.Tensor):
                raise AssertionError(
                    f"{what} holds tensors; the indices must be plain Python ints (use int(i) or .tolist())"
                )
            if isinstance(index, np.generic):
                raise AssertionError(
                    f"{what} holds NumPy numbers ({type(index).__name__}); the indices must be plain "
                    "Python ints (use int(i) or .tolist())"
                )
            if type(index) is not int:
                raise AssertionError(f"{what} must hold Python ints, got {type(index).__name__}")
    return list(result[0]), list(result[1])


def _check_split(train: list[int], val: list[int], targets: list[int], expected: dict) -> None:
    if train != sorted(train) or val != sorted(val):
        raise AssertionError("split_indices must sort both lists of indices in increasing order")
    both = sorted(set(train) & set(val))
    if both:
        raise AssertionError(
            f"indices {_names(map(str, both))} appear in both lists; each index goes to exactly one"
        )
    for what, indices in (("train_indices", train), ("val_indices", val)):
        if len(set(indices)) != len(indices):
            raise AssertionError(f"{what} lists some indices twice; each index appears exactly once")
    everything = range(len(targets))
    outside = sorted(set(train + val) - set(everything))
    if outside:
        raise AssertionError(
            f"indices {_names(map(str, outside))} are out of range: targets has {len(targets)} entries"
        )
    missing = sorted(set(everything) - set(train + val))
    if missing:
        raise AssertionError(
            f"indices {_names(map(str, missing))} are in neither list; every index 0 ... "
            f"{len(targets) - 1} must go to train or val"
        )
    counts = {label: 0 for label in expected}
    counts.update(Counter(targets[i] for i in val))
    if counts != expected:
        train_counts = {label: 0 for label in expected}
        train_counts.update(Counter(targets[i] for i in train))
        message = (
            f"validation images per class: {counts}, expected {expected} (a class of n images sends "
            "round(val_fraction * n) to validation, at least 1 and at most n - 1)"
        )
        if train_counts == expected:
            message += "; the two lists are swapped: return (train_indices, val_indices)"
        elif abs(sum(counts.values()) - sum(expected.values())) <= len(expected):
            message += "; the split is not stratified: hold out that share of each class separately"
        raise AssertionError(message)


def _check_one_case(fn, targets: list[int], val_fraction: float, seed: int, expected: dict) -> None:
    context = f"targets (list of {len(targets)} class indices), val_fraction={val_fraction}, seed={seed}"

    def split(split_seed: int) -> tuple[list[int], list[int]]:
        before = _global_random_states()
        result = _call(fn, "split_indices", list(targets), val_fraction, split_seed, context=context)
        if not _same_random_states(before, _global_random_states()):
            raise AssertionError(
                "split_indices changed the global random state (random.seed/shuffle, np.random or "
                "torch.manual_seed/randperm without a generator); use a local generator such as "
                "random.Random(seed)"
            )
        train, val = _read_split(result)
        # Checked for several seeds: an unstratified split can match the counts by luck once.
        _check_split(train, val, targets, expected)
        return train, val

    first = split(seed)
    if split(seed) != first:
        raise AssertionError(
            "split_indices is not deterministic: the same seed gave a different split; draw from a "
            "generator seeded with seed, e.g. random.Random(seed)"
        )
    others = [split(seed + 1), split(seed + 2)]
    if len(targets) > 10 and all(other == first for other in others):
        raise AssertionError(
            f"split_indices ignores the seed: seeds {seed}, {seed + 1} and {seed + 2} gave the same split; "
            "seed your generator with the seed argument"
        )


def check_split_indices(fn, seed: int = 0) -> None:
    """Check exercise ``split_indices`` of 06_capstone: a stratified, seeded, sorted split of the indices."""
    with _checking(fn, "split_indices", seed):
        states = random.getstate(), np.random.get_state()
        try:
            for targets, val_fraction, expected in _SPLIT_CASES[seed % 2]:
                _check_one_case(fn, targets, val_fraction, seed, expected)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])

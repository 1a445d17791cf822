"""Models: pretrained backbones, finding and replacing heads, freezing and unfreezing."""

from __future__ import annotations

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

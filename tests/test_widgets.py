"""Unit tests for tlhelpers.widgets: the logic behind the widgets, on tiny models, without a browser."""

import datetime
import io
import math

import pytest
import timm
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from tlhelpers import widgets
from tlhelpers.models import Backbone


class Tiny(nn.Module):
    """stem 112 parameters, block 296, fc Linear(8, 5) 45 (18 once replaced by a 2-class head)."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)  # 4*3*3*3 + 4 = 112
        self.block = nn.Conv2d(4, 8, 3)  # 8*4*3*3 + 8 = 296
        self.pool = nn.AdaptiveAvgPool2d(1)  # no parameters: not a stage
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.block(torch.relu(self.stem(x))))).flatten(1))


CATEGORIES = ["c0", "c1", "c2", "c3", "c4"]
# fc ignores its input (zero weight), so these are the logits of every image: c1 > c3 > c4 > c0 > c2.
BIAS = [0.1, 2.0, -1.0, 1.0, 0.5]
ORDER = ["c1", "c3", "c4", "c0", "c2"]


def fixed_logits_model() -> Tiny:
    model = Tiny()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor(BIAS))
    return model.eval()


@pytest.fixture
def backbone() -> Backbone:
    return Backbone(
        name="tiny",
        model=fixed_logits_model(),
        categories=list(CATEGORIES),
        transforms=T.Compose([T.Resize((16, 16)), T.ToTensor()]),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        input_size=16,
        head_name="fc",
    )


def png_bytes(color=(200, 40, 40), size=(20, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def not_autograding(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


# ---------------------------------------------------------------- freezing: plain functions


def test_model_stages_of_the_course_backbones_and_of_any_model():
    resnet = torchvision.models.resnet18(weights=None)
    assert widgets.model_stages(resnet) == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    blocks = [f"blocks.{index}" for index in range(7)]
    assert widgets.model_stages(lite0) == ["conv_stem+bn1", *blocks, "conv_head+bn2", "classifier"]
    assert widgets.model_stages(Tiny()) == ["stem", "block", "fc"]


@pytest.mark.parametrize("n, trainable", [(1, 18), (2, 296 + 18), (3, 112 + 296 + 18)])
def test_summary_counts_and_memory_match_hand_computed_values(n, trainable):
    summary = widgets.freezing_summary(Tiny(), n_unfrozen=n, num_classes=2, timing="none")

    assert summary.trainable == trainable
    assert summary.total == 112 + 296 + 18
    assert summary.trainable_stages == ["stem", "block", "fc"][3 - n :]
    assert summary.gradient_mb == pytest.approx(trainable * 4 / 1e6)
    assert summary.adam_mb == pytest.approx(2 * trainable * 4 / 1e6)
    assert summary.sgd_momentum_mb == pytest.approx(trainable * 4 / 1e6)
    assert summary.timing == "not timed" and summary.epoch_seconds is None


def test_summary_keeps_the_original_head_when_num_classes_is_none_and_leaves_the_model_alone():
    model = Tiny()
    model.stem.weight.requires_grad = False

    summary = widgets.freezing_summary(model, n_unfrozen=1, num_classes=None, timing="none")

    assert summary.trainable == 8 * 5 + 5
    assert model.fc.out_features == 5
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]


def test_summary_of_resnet18_head_and_top_stage():
    resnet = torchvision.models.resnet18(weights=None)
    layer4 = sum(p.numel() for p in resnet.layer4.parameters())

    head_only = widgets.freezing_summary(resnet, n_unfrozen=1, timing="none")
    with_layer4 = widgets.freezing_summary(resnet, n_unfrozen=2, timing="none")

    assert head_only.trainable == 512 * 2 + 2
    assert with_layer4.trainable == layer4 + 512 * 2 + 2
    assert resnet.fc.out_features == 1000


def test_measured_time_scales_to_an_epoch_and_is_cached(monkeypatch):
    costs = widgets.FreezingCosts(Tiny(), num_images=20, batch_size=8, image_size=12, device="cpu")

    summary = costs.summary(2, timing="measure")

    assert summary.timing == "measured"
    assert summary.step_seconds > 0
    assert summary.epoch_seconds == pytest.approx(summary.step_seconds * math.ceil(20 / 8))
    monkeypatch.setattr(costs.model, "forward", lambda *_: pytest.fail("measured again"))
    assert costs.summary(2, timing="measure").step_seconds == summary.step_seconds


def test_estimated_time_grows_with_the_unfrozen_stages():
    costs = widgets.FreezingCosts(Tiny(), image_size=12, device="cpu")

    steps = [costs.summary(n, timing="estimate").step_seconds for n in (1, 2, 3)]

    assert all(step > 0 for step in steps)
    assert steps == sorted(steps)
    assert costs.summary(1, timing="estimate").timing == "estimated"


def test_nothing_is_timed_while_autograding(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    costs = widgets.FreezingCosts(Tiny(), image_size=12, device="cpu")
    monkeypatch.setattr(costs, "measure_step", lambda *_: pytest.fail("timed while autograding"))
    monkeypatch.setattr(costs, "estimate_step", lambda *_: pytest.fail("timed while autograding"))

    assert costs.summary(3, timing="measure").timing == "not timed"
    explorer = widgets.FreezingExplorer(costs)
    assert explorer.widget is None
    assert "not timed" in explorer._static_bundle()["text/plain"]


@pytest.mark.parametrize(
    "arguments, error, argument",
    [
        ({"n_unfrozen": 0}, ValueError, "n_unfrozen"),
        ({"n_unfrozen": 4}, ValueError, "n_unfrozen"),
        ({"n_unfrozen": 1.5}, TypeError, "n_unfrozen"),
        ({"stages": ["stem", "nope"]}, ValueError, "stages"),
        ({"stages": "fc"}, TypeError, "stages"),
        ({"timing": "fast"}, ValueError, "timing"),
        ({"num_images": 0}, ValueError, "num_images"),
        ({"batch_size": -2}, ValueError, "batch_size"),
    ],
)
def test_freezing_summary_names_the_wrong_argument(arguments, error, argument):
    with pytest.raises(error, match=argument):
        widgets.freezing_summary(Tiny(), **arguments)


def test_freezing_summary_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="model must be"):
        widgets.freezing_summary("resnet18")
    with pytest.raises(TypeError, match="backbone must be"):
        widgets.freezing_explorer("resnet18")


# ---------------------------------------------------------------- freezing: the explorer


def test_slider_callback_updates_the_panel():
    explorer = widgets.freezing_explorer(Tiny(), image_size=12, timing="estimate", device="cpu")
    assert explorer.slider.min == 1 and explorer.slider.max == 3 and explorer.slider.value == 1
    assert "<b>18</b> of 426" in explorer.panel.value

    explorer.on_change({"new": 3, "old": 1, "name": "value"})
    assert "<b>426</b> of 426" in explorer.panel.value
    assert "frozen: nothing" in explorer.panel.value

    explorer.slider.value = 2  # through the traitlets observer, as a moved slider would
    assert "<b>314</b> of 426" in explorer.panel.value
    assert "time per epoch (estimated)" in explorer.panel.value


def test_static_explorer_shows_a_table_of_every_setting(capsys):
    explorer = widgets.freezing_explorer(Tiny(), image_size=12, static=True, device="cpu")

    assert explorer.widget is None and explorer.slider is None
    text = explorer._static_bundle()["text/plain"]
    lines = explorer.table().splitlines()
    assert len(lines) == 4 and lines[0].split()[0] == "unfrozen"
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert "426 (100.00%)" in lines[3]
    assert explorer.table() in text
    html = explorer._static_bundle()["text/html"]
    assert html.count("<tr>") == 4
    explorer.show()  # outside Jupyter: the text version
    printed = capsys.readouterr()
    assert printed.out.strip() == text and printed.err == ""


# ---------------------------------------------------------------- upload and predict


def test_upload_contents_reads_ipywidgets_8_values():
    value = (
        {"name": "a.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"), "last_modified": 0},
        {"name": "b.jpg", "type": "image/jpeg", "size": 2, "content": memoryview(b"de"), "last_modified": 0},
    )
    assert widgets.upload_contents(value) == [("a.png", b"abc"), ("b.jpg", b"de")]


def test_upload_contents_reads_ipywidgets_7_values():
    value = {"a.png": {"metadata": {"name": "a.png", "type": "image/png", "size": 3}, "content": b"abc"}}
    assert widgets.upload_contents(value) == [("a.png", b"abc")]


def test_upload_contents_of_nothing_and_of_wrong_values():
    assert widgets.upload_contents(()) == [] and widgets.upload_contents({}) == []
    assert widgets.upload_contents(None) == []
    with pytest.raises(TypeError, match="value"):
        widgets.upload_contents(b"raw bytes")
    with pytest.raises(TypeError, match=r"value\[0\]"):
        widgets.upload_contents(({"name": "a.png"},))


def test_load_image_explains_bad_bytes(tmp_path):
    with pytest.raises(ValueError, match="not a picture"):
        widgets.load_image(b"this is a text file, not a photo")
    with pytest.raises(ValueError, match="empty"):
        widgets.load_image(b"")
    with pytest.raises(ValueError, match="not a picture"):
        widgets.load_image(png_bytes()[:40])  # a truncated PNG
    with pytest.raises(FileNotFoundError, match="no file"):
        widgets.load_image(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="image must be"):
        widgets.load_image(42)
    grey = Image.new("L", (5, 5), 128)
    assert widgets.load_image(grey).mode == "RGB"


def test_predict_image_gives_the_top_k_highest_first(backbone):
    predictions = widgets.predict_image(png_bytes(), backbone, k=3)

    assert [name for name, _ in predictions] == ORDER[:3]
    expected = torch.softmax(torch.tensor(BIAS), dim=0).sort(descending=True).values[:3]
    assert [p for _, p in predictions] == pytest.approx(expected.tolist())
    assert all(isinstance(p, float) for _, p in predictions)


def test_predict_image_with_a_trained_model_uses_its_classes(backbone):
    trained = Tiny(num_classes=2)
    with torch.no_grad():
        trained.fc.weight.zero_()
        trained.fc.bias.copy_(torch.tensor([-1.0, 1.0]))
    trained.train()

    predictions = widgets.predict_image(png_bytes(), backbone, model=trained, classes=["ants", "bees"])

    assert [name for name, _ in predictions] == ["bees", "ants"]  # k=5 capped at 2 classes
    assert sum(p for _, p in predictions) == pytest.approx(1.0)
    assert trained.training, "predict_image must leave the model's mode as it was"


def test_predict_image_names_the_wrong_argument(backbone):
    with pytest.raises(ValueError, match="classes"):
        widgets.predict_image(png_bytes(), backbone, model=Tiny(2))
    with pytest.raises(ValueError, match="classes"):
        widgets.predict_image(png_bytes(), backbone, model=Tiny(2), classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="k must"):
        widgets.predict_image(png_bytes(), backbone, k=0)
    with pytest.raises(TypeError, match="backbone"):
        widgets.predict_image(png_bytes(), backbone.model)
    with pytest.raises(TypeError, match="model must"):
        widgets.predict_image(png_bytes(), backbone, model="resnet", classes=["a"])


def test_upload_callback_shows_predictions_or_a_message(backbone):
    box = widgets.upload_and_predict(backbone, k=2, sample=png_bytes())

    box.on_upload({"new": ({"name": "mine.png", "content": memoryview(png_bytes((0, 90, 0)))},)})
    assert "mine.png" in box.panel.value and "<img" in box.panel.value
    assert box.panel.value.index(">c1<") < box.panel.value.index(">c3<")
    assert ">c4<" not in box.panel.value

    box.on_upload({"new": {"notes.txt": {"metadata": {"name": "notes.txt"}, "content": b"hello"}}})
    assert "Could not predict notes.txt" in box.panel.value and "not a picture" in box.panel.value
    assert "Traceback" not in box.panel.value

    box.on_upload({"new": "not an upload"})
    assert "FileUpload value" in box.panel.value


def test_upload_static_fallback_predicts_the_sample(backbone, tmp_path):
    sample = tmp_path / "bee.png"
    sample.write_bytes(png_bytes())

    box = widgets.upload_and_predict(backbone, sample=sample, static=True)

    assert box.widget is None and box.upload is None
    bundle = box._static_bundle()
    assert "bee.png" in bundle["text/plain"]
    assert [line.split()[0] for line in bundle["text/plain"].splitlines()[1:]] == ORDER
    assert "<img" in bundle["text/html"]

    broken = widgets.upload_and_predict(backbone, sample=b"garbage", static=True)
    assert "Could not predict the sample photo" in broken._static_bundle()["text/plain"]


def test_upload_and_predict_names_the_wrong_argument(backbone):
    with pytest.raises(TypeError, match="backbone"):
        widgets.upload_and_predict(Tiny())
    with pytest.raises(ValueError, match="classes"):
        widgets.upload_and_predict(backbone, model=Tiny(2))
    with pytest.raises(ValueError, match="k must"):
        widgets.upload_and_predict(backbone, k=0)


def test_upload_box_costs_nothing_while_autograding(backbone, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    box = widgets.upload_and_predict(backbone, sample=b"never read")
    assert box.widget is None
    assert "skipped while autograding" in box._static_bundle()["text/plain"]


def simulate_upload(upload, name: str, data: bytes) -> None:
    """Set a FileUpload's traits the way the browser does, in ipywidgets 7 (Colab) or 8."""
    import ipywidgets

    if ipywidgets.__version__.startswith("7."):
        upload.metadata = [{"name": name, "type": "image/png", "size": len(data), "lastModified": 0}]
        upload.data = [data]
        upload._counter += 1  # the frontend's signal that a file arrived: it fills `value`
    else:
        arrived = datetime.datetime.now(datetime.timezone.utc)
        entry = {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data)}
        upload.value = ({**entry, "last_modified": arrived},)


def test_an_upload_through_the_real_widget_reaches_the_panel(backbone):
    box = widgets.upload_and_predict(backbone, k=1, sample=png_bytes())

    simulate_upload(box.upload, "garden.png", png_bytes((10, 120, 10)))
    assert "garden.png" in box.panel.value and ">c1<" in box.panel.value

    simulate_upload(box.upload, "notes.png", b"not really a png")
    assert "Could not predict notes.png" in box.panel.value


def test_showing_the_explorer_times_nothing_until_the_slider_moves():
    explorer = widgets.freezing_explorer(Tiny(), image_size=12, device="cpu")  # timing="measure"

    assert explorer.costs._measured == {}
    assert "(estimated)" in explorer.panel.value and "move the slider" in explorer.panel.value

    explorer.slider.value = 3
    assert set(explorer.costs._measured) == {3}
    assert "(measured)" in explorer.panel.value


def test_a_failing_measurement_shows_in_the_panel(monkeypatch):
    explorer = widgets.freezing_explorer(Tiny(), image_size=12, device="cpu")

    def out_of_memory(*_):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(explorer.costs, "measure_step", out_of_memory)
    explorer.slider.value = 3
    assert "Could not time 3 unfrozen stage(s): CUDA out of memory" in explorer.panel.value

"""The widgets in a rendered notebook: executed with widget state stored, exported to HTML, and
drawn by headless Chromium (Debian's ``chromium`` package).

A small notebook is generated here: it shows the freezing explorer and the upload box on a tiny
model, so the test needs neither the data set nor pretrained weights. The exported HTML loads its
widget scripts (require.js and @jupyter-widgets/html-manager) from a CDN, out of reach offline.
When ``TL_WIDGET_JS`` names a folder holding ``require.js`` and ``embed-amd.js`` (CI fetches them
from the npm registry), the page loads them from there instead, and Chromium's rendered DOM must
contain the live slider and upload button; the screenshot (``test-artifacts/notebook.png``) then
shows them. Without Chromium or those scripts the browser steps are skipped, unless
``TL_REQUIRE_CHROMIUM=1`` (set by CI).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

SETUP = """\
import io

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from tlhelpers import widgets
from tlhelpers.models import Backbone


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.block = nn.Conv2d(4, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.block(torch.relu(self.stem(x))))).flatten(1))


torch.manual_seed(0)
backbone = Backbone(
    name="tiny",
    model=Tiny().eval(),
    categories=["ant", "bee", "honeycomb"],
    transforms=T.Compose([T.Resize((16, 16)), T.ToTensor()]),
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    input_size=16,
    head_name="fc",
)
buffer = io.BytesIO()
Image.new("RGB", (64, 48), (230, 180, 40)).save(buffer, format="PNG")
sample = buffer.getvalue()
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def make_notebook() -> nbformat.NotebookNode:
    cells = [
        nbformat.v4.new_markdown_cell("# Widgets, rendered\n\nThe freezing explorer and the upload box."),
        nbformat.v4.new_code_cell(SETUP),
        nbformat.v4.new_code_cell(
            'widgets.freezing_explorer(Tiny(), image_size=16, timing="estimate", device="cpu")'
        ),
        nbformat.v4.new_code_cell("widgets.upload_and_predict(backbone, k=3, sample=sample)"),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return notebook


def pin_kernel_to_this_python(folder: Path, monkeypatch) -> None:
    """A "python3" kernelspec that runs this interpreter, ahead of any other on JUPYTER_PATH."""
    kernel_dir = folder / "jupyter-data" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(folder / "jupyter-data"))
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def widget_models(state: dict) -> set[str]:
    return {model["model_name"] for model in state["state"].values()}


def test_widgets_render_in_an_exported_notebook(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    pin_kernel_to_this_python(tmp_path, monkeypatch)
    notebook = make_notebook()
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    for cell in notebook.cells[1:]:
        for output in cell.outputs:
            assert output.output_type != "error", f"{output.ename}: {output.evalue}"
            assert not (output.output_type == "stream" and output.name == "stderr"), output.text
    state = notebook.metadata["widgets"][WIDGET_STATE]
    models = widget_models(state)
    assert {"IntSliderModel", "FileUploadModel", "HTMLModel", "VBoxModel"} <= models
    panels = [m["state"].get("value", "") for m in state["state"].values() if m["model_name"] == "HTMLModel"]
    assert any("trainable parameters" in value for value in panels), "the explorer's panel is empty"
    static_outputs = [
        output.data.get("text/plain", "")
        for cell in notebook.cells[2:]
        for output in cell.outputs
        if output.output_type == "display_data"
    ]
    assert any("Every setting at once" in text for text in static_outputs)
    assert any("Example" in text for text in static_outputs)

    rendered = draw_in_chromium(notebook, "notebook", tmp_path)
    if rendered is not None:
        for drawn in ("widget-slider", "widget-upload"):
            assert drawn in rendered, f"the browser did not draw the {drawn} widget"


def test_the_freezing_notebook_draws_its_explorer(tmp_path, monkeypatch):
    """A course notebook itself, 02_freezing, executed and drawn: its explorer's slider is live."""
    from nbclient import NotebookClient

    from tlhelpers.data import DataNotFoundError, find_hymenoptera

    try:
        find_hymenoptera(download=False)
    except DataNotFoundError as error:
        pytest.skip(f"the ants-vs-bees data is not here: {error}")
    pin_kernel_to_this_python(tmp_path, monkeypatch)
    source = REPO / "solutions" / "02_freezing" / "02_freezing.ipynb"
    notebook = nbformat.read(source, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(source.parent)}},
    ).execute()
    assert "IntSliderModel" in widget_models(notebook.metadata["widgets"][WIDGET_STATE])
    # The page is long: draw the title and the explorer's section, with the widget state of the run.
    excerpt = copy.deepcopy(notebook)
    excerpt.cells = [
        c for c in notebook.cells if c.get("id") in ("md-title", "md-freezing-explorer", "freezing-explorer")
    ]
    assert len(excerpt.cells) == 3, "02_freezing's title or explorer cells were renamed"
    rendered = draw_in_chromium(excerpt, "02_freezing", tmp_path)
    if rendered is not None:
        assert "widget-slider" in rendered, "the browser did not draw the freezing explorer's slider"
        assert "trainable parameters" in rendered


def draw_in_chromium(notebook: nbformat.NotebookNode, name: str, tmp_path: Path) -> str | None:
    """Export ``notebook`` to HTML, screenshot it as ``test-artifacts/<name>.png`` with headless
    Chromium and return the DOM the browser rendered; None when the widgets' scripts are missing
    (then the widgets cannot be drawn offline). Skips without Chromium, unless CI requires it."""
    from nbconvert import HTMLExporter

    scripts = widget_scripts()
    exporter = HTMLExporter()
    if scripts:
        exporter = HTMLExporter(
            require_js_url=scripts["require.js"], widget_renderer_url=scripts["embed-amd.js"]
        )
    html, _ = exporter.from_notebook_node(notebook)
    assert WIDGET_STATE in html

    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    nbformat.write(notebook, ARTIFACTS / f"{name}.ipynb")

    browser = chromium()
    if browser is None:
        if os.environ.get("TL_REQUIRE_CHROMIUM"):
            pytest.fail("TL_REQUIRE_CHROMIUM is set but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium): no screenshot of the notebook")
    screenshot = ARTIFACTS / f"{name}.png"
    screenshot.unlink(missing_ok=True)
    options = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=15000",  # let the widget scripts run before the page is captured
        "--window-size=1280,2000",
    ]
    finished = subprocess.run(
        [browser, *options, f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.is_file(), (
        f"chromium wrote no screenshot (exit {finished.returncode}): {finished.stderr[-2000:]}"
    )
    print(f"screenshot of the rendered notebook: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) blank"

    if not scripts:
        if os.environ.get("TL_REQUIRE_CHROMIUM"):
            pytest.fail("TL_REQUIRE_CHROMIUM is set but TL_WIDGET_JS holds no require.js and embed-amd.js")
        return None
    return subprocess.run(
        [browser, *options, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout


def widget_scripts() -> dict[str, str]:
    """file:// URLs of require.js and the widgets' embed-amd.js under TL_WIDGET_JS (empty if absent)."""
    folder = os.environ.get("TL_WIDGET_JS")
    if not folder:
        return {}
    found = {}
    for name in ("require.js", "embed-amd.js"):
        matches = sorted(Path(folder).rglob(name))
        if matches:
            found[name] = matches[0].resolve().as_uri()
    return found if len(found) == 2 else {}

"""The benchmark code on a tiny synthetic backbone and image folder, so that `make bench` cannot rot.

Runs in seconds: none of it touches the real data, the pretrained weights or the network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `benchmarks` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.__main__ import main  # noqa: E402
from benchmarks.head import benchmark_head  # noqa: E402
from benchmarks.measure import run_measured  # noqa: E402
from benchmarks.strategies import DIAGNOSIS_VARIANTS  # noqa: E402
from benchmarks.tiny import make_tiny_image_folder, tiny_backbone  # noqa: E402
from tlhelpers.data import eval_transforms, image_folder  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_textbook_loop_and_cached_path_train_the_same_head(tmp_path):
    root = make_tiny_image_folder(tmp_path / "images")
    backbone = tiny_backbone()
    train = image_folder(root / "train", eval_transforms(backbone))
    val = image_folder(root / "val", eval_transforms(backbone))

    result = benchmark_head(backbone, train, val, epochs=10, lr=0.05)

    # Same head init, batches and optimizer on the same features: the two paths must agree.
    assert result["textbook"]["val_acc"] == result["cached"]["val_acc"] == 1.0
    assert result["speedup"] == pytest.approx(result["textbook"]["seconds"] / result["cached"]["seconds"])
    assert [t["passed"] for t in result["targets"]] == [result["speedup"] >= 10, True]
    assert torch.equal(backbone.model.fc.weight, tiny_backbone().model.fc.weight), "backbone was modified"


def test_tiny_run_writes_every_result_file(tmp_path, capsys):
    assert main(["--tiny", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["sections"]) == {"head", "strategies", "diagnosis", "efficiency"}
    strategies = results["sections"]["strategies"]["strategies"]
    assert list(strategies) == ["scratch", "feature_extraction", "fine_tuning", "discriminative", "two_stage"]
    assert strategies["feature_extraction"]["trainable_parameters"] == 8 * 2 + 2
    assert (
        strategies["fine_tuning"]["trainable_parameters"]
        > strategies["feature_extraction"]["trainable_parameters"]
    )
    assert [row["per_class"] for row in results["sections"]["efficiency"]["rows"]] == [2, "all"]
    markdown = (tmp_path / "results.md").read_text()
    assert len(results["sections"]["diagnosis"]["variants"]) == len(DIAGNOSIS_VARIANTS)
    for heading in (
        "1. Training the head",
        "2. Strategy comparison",
        "2b. Fine-tuning",
        "2c. Data efficiency",
    ):
        assert heading in markdown
    assert "tiny-cnn" in markdown and "PASS" in markdown
    assert (tmp_path / "benchmarks.png").read_bytes()[:4] == b"\x89PNG"

    # The report can be rebuilt from results.json alone.
    (tmp_path / "results.md").unlink()
    assert main(["--render-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_text() == markdown

    # A later subset run keeps the sections it did not run.
    assert main(["--tiny", "--only", "head", "--out", str(tmp_path)]) == 0
    assert set(json.loads((tmp_path / "results.json").read_text())["sections"]) == {
        "head",
        "strategies",
        "diagnosis",
        "efficiency",
    }


def test_tiny_mode_refuses_the_notebook_benchmarks(capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--only", "course"])
    assert "need the real notebooks" in capsys.readouterr().err


def test_run_measured_reports_the_peak_of_the_largest_process_in_the_tree():
    # The grandchild touches 300 MB and holds it briefly, like a Jupyter kernel under nbval.
    allocate = (
        "import time; x = bytearray(300 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); time.sleep(0.5)"
    )
    spawn = (
        f"import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', {allocate!r}]).returncode)"
    )
    run = run_measured([sys.executable, "-c", spawn], poll_seconds=0.05)
    assert run.returncode == 0, run.output_tail
    assert run.peak_rss_bytes >= 300 * 1024 * 1024
    assert run.peak_tree_rss_bytes >= run.peak_rss_bytes * 0.9
    assert run.seconds >= 0.5


def test_run_measured_does_not_count_the_memory_of_the_caller():
    # This process holds torch (hundreds of MB); a bare Python child must not be charged for it.
    run = run_measured([sys.executable, "-c", "import time; time.sleep(0.3)"], poll_seconds=0.05)
    assert run.returncode == 0
    assert 0 < run.peak_rss_bytes < 100 * 1024 * 1024


def test_readme_shows_the_committed_results():
    from benchmarks.report import README_END, README_START, load_results, render_summary

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0]
    expected = render_summary(load_results(REPO / "benchmarks" / "results"))
    assert block.strip() == expected.strip(), "run `python -m benchmarks --render-only` to update the README"


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    from benchmarks.report import README_END, README_START, update_readme

    results = json.loads((REPO / "benchmarks" / "results" / "results.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nstale\n{README_END}\n\nafter\n")
    assert update_readme(readme, results)
    text = readme.read_text()
    assert text.startswith("# Title\n") and text.endswith("\n\nafter\n")
    assert "stale" not in text and "| 4. Cost of grading |" in text
    readme.write_text("no markers\n")
    assert not update_readme(readme, results) and readme.read_text() == "no markers\n"

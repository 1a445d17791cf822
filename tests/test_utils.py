"""pick_device and device_report: what a learner without a GPU is told, from measured timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tlhelpers import utils
from tlhelpers.utils import CPU_SECONDS, device_report, pick_device

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "results.json"


def test_cpu_seconds_are_the_committed_benchmark_measurements():
    course = json.loads(RESULTS.read_text())["sections"]["course"]
    assert course["machine"]["cpu_cores"] == 2 and course["machine"]["device"] == "cpu"
    measured = {row["notebook"]: row["seconds"] for row in course["notebooks"]}
    assert set(measured) == set(CPU_SECONDS), "one estimate per solution notebook"
    solutions = Path(__file__).resolve().parents[1] / "solutions"
    assert set(CPU_SECONDS) == {folder.name for folder in solutions.glob("[0-9]*")}
    for notebook, seconds in measured.items():
        # Rounded up to 5 s; a re-run of the benchmark that moves a number more than that needs a new table.
        assert seconds <= CPU_SECONDS[notebook] < seconds + 5, notebook


def test_pick_device_on_a_cpu_names_the_notebook_and_its_measured_time(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = pick_device(verbose=True, notebook="05_fine_tuning")
    out = capsys.readouterr().out
    assert device == torch.device("cpu")
    assert "running on the CPU" in out
    assert f"05_fine_tuning takes about {CPU_SECONDS['05_fine_tuning']} s" in out
    assert "measured on a 2-core CPU" in out


def test_pick_device_without_a_notebook_gives_the_course_range(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pick_device(verbose=True)
    out = capsys.readouterr().out
    assert f"{min(CPU_SECONDS.values())} to {max(CPU_SECONDS.values())} s" in out
    assert pick_device() == torch.device("cpu")
    assert capsys.readouterr().out == "", "quiet unless verbose"


def test_gpu_report_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 9000")
    assert device_report("cuda", "01_imagenet_features") == "Using GPU: Fake GPU 9000."


def test_unknown_notebook_is_refused():
    with pytest.raises(ValueError, match="05_fine_tunning.*05_fine_tuning"):
        utils.device_report("cpu", "05_fine_tunning")

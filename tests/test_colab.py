"""The notebooks open and run on Colab: badges, the setup cell, and a rehearsal of a Colab session.

* the badges, setup cells and README links are what tools/colab.py renders from the address in
  pyproject.toml, so the address cannot drift;
* the setup cell does nothing outside Colab, and on Colab asks pip for this repository's package
  with Colab's torch and torchvision pinned;
* ``test_notebook_runs_in_a_fresh_colab_like_environment`` (marker ``colab``) plays a learner's
  first session: a new virtualenv that holds only what Colab preinstalls and we rely on, a stub of
  ``google.colab``, the notebook's own setup cell installing the package from (a snapshot of) this
  working tree over git, then the whole notebook. It needs the package registry (pip) and the
  ants-vs-bees data, and takes a few minutes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tlhelpers.cli import load_repository_tool

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "solutions" / "01_imagenet_features" / "01_imagenet_features.ipynb"


colab = load_repository_tool("colab")
ADDRESS = colab.repository_address()


# ------------------------------------------------------------------ rendered from pyproject.toml


def test_badges_setup_cells_and_readme_match_the_address_in_pyproject():
    stale = colab.sync(REPO, write=False)
    assert not stale, (
        "out of date with [project.urls] Repository in pyproject.toml: "
        f"{', '.join(str(path.relative_to(REPO)) for path in stale)}; run `python tools/colab.py`"
    )


@pytest.mark.parametrize("notebook", colab.notebooks(REPO / "solutions"), ids=lambda path: path.stem)
def test_setup_cell_comes_first_and_is_not_graded(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    code_cells = [cell for cell in cells if cell.cell_type == "code"]
    setup = code_cells[0]
    assert setup is cells[1] and setup.id == colab.SETUP_CELL_ID
    assert colab.SETUP_CELL_ID in setup.metadata.get("tags", [])
    assert "nbgrader" not in setup.metadata, "the setup cell must not be graded or locked by nbgrader"
    assert setup.source == colab.setup_source(ADDRESS)
    assert colab.colab_url(ADDRESS, notebook.stem) in cells[0].source


def test_changing_the_address_is_caught_and_rerendered_byte_stably(tmp_path):
    shutil.copytree(REPO / "solutions", tmp_path / "solutions")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    moved = "https://github.com/someone-else/transfer-learning-fork"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(ADDRESS, moved), encoding="utf-8")

    everything = {tmp_path / "README.md", *colab.notebooks(tmp_path / "solutions")}
    assert colab.main(["--check", "--repo", str(tmp_path)]) == 1
    assert set(colab.sync(tmp_path, write=True)) == everything
    written = {path: path.read_bytes() for path in everything}
    assert colab.sync(tmp_path, write=True) == []
    assert {path: path.read_bytes() for path in everything} == written
    assert colab.main(["--check", "--repo", str(tmp_path)]) == 0

    readme = written[tmp_path / "README.md"].decode()
    assert ADDRESS not in readme and "github/someone-else/transfer-learning-fork/blob/main/course/" in readme
    first = nbformat.reads(written[min(everything - {tmp_path / "README.md"})].decode(), as_version=4)
    assert f"git+{moved}" in first.cells[1].source and ADDRESS not in first.cells[1].source


def test_address_must_be_a_github_repository(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://example.org/course.git"\n')
    with pytest.raises(colab.ColabError, match="github.com/OWNER/NAME"):
        colab.repository_address(pyproject)


# ------------------------------------------------------------------ the setup cell, run in place


def test_setup_cell_outside_colab_does_nothing_and_says_so():
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", colab.setup_source(ADDRESS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "Not on Colab: nothing to install, tlhelpers comes from this environment."
    ]
    assert time.perf_counter() - started < 10


def test_setup_cell_on_colab_installs_from_the_repository_and_pins_torch(monkeypatch, capsys):
    """The Colab branch with a stub google.colab and pip replaced by a recorder."""
    import types

    calls, enabled = [], []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: enabled.append(True)
    package = types.ModuleType("google.colab")
    package.output = output
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.setattr(subprocess, "run", lambda command, check: calls.append((command, check)))

    exec(compile(colab.setup_source(ADDRESS), "<setup cell>", "exec"), {"__name__": "__main__"})

    [(command, check)] = calls
    torch_pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("torch", "torchvision")]
    assert command == [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        f"tlhelpers @ git+{ADDRESS}",
        *torch_pins,
    ]
    assert check and enabled == [True]
    assert capsys.readouterr().out.startswith(f"Colab: installed tlhelpers @ git+{ADDRESS}; kept torch==")


# ------------------------------------------------------------------ a Colab session, rehearsed

# What a new Colab runtime already has that the course relies on, taken from this virtualenv
# (torch, torchvision and everything they need: numpy, pillow, the CUDA libraries...) ...
BORROWED = ("torch", "torchvision")
# ... and installed fresh: the kernel, and the ipywidgets major version Colab ships.
PREINSTALLED = ("ipykernel", "nbclient", "ipywidgets==7.7.1")

GOOGLE_COLAB_STUB = '''\
"""Stand-in for Colab's google.colab package: enough for the course's setup cell."""

from . import output
'''
OUTPUT_STUB = """\
custom_widget_manager_enabled = False


def enable_custom_widget_manager():
    global custom_widget_manager_enabled
    custom_widget_manager_enabled = True
"""
PROBE_CELL = """\
import importlib.metadata
import json
import sys

import google.colab.output
import ipywidgets
import tlhelpers
import torch

print("PROBE " + json.dumps({
    "tlhelpers": tlhelpers.__file__,
    "torch": importlib.metadata.version("torch"),
    "torch_file": torch.__file__,
    "ipywidgets": ipywidgets.__version__,
    "widget_manager": google.colab.output.custom_widget_manager_enabled,
    "executable": sys.executable,
}))
"""
RUNNER = """\
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

source, target, workdir = sys.argv[1:]
nb = nbformat.read(source, as_version=4)
client = NotebookClient(
    nb, kernel_name="python3", timeout=600, startup_timeout=120, resources={"metadata": {"path": workdir}}
)
try:
    client.execute()
except CellExecutionError:
    sys.exit(1)
finally:
    nbformat.write(nb, target)
"""


def data_folder() -> Path | None:
    for candidate in (os.environ.get("TL_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).exists():
            return Path(candidate).resolve()
    return None


def requirement_closure(names) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions ``names`` need, themselves included (optional extras left out)."""
    found, pending = {}, [canonicalize_name(name) for name in names]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        for text in found[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return found


def link_distributions(distributions, folder: Path) -> None:
    """Make ``folder`` an import path holding symlinks to just these distributions' files."""
    folder.mkdir(parents=True)
    for distribution in distributions:
        site = Path(distribution.locate_file(""))
        for entry in {file.parts[0] for file in distribution.files or []}:
            if entry in ("..", "__pycache__") or (folder / entry).exists():
                continue
            (folder / entry).symlink_to(site / entry)


def working_tree_snapshot(destination: Path) -> None:
    """A one-commit git repository of this working tree as it is now, uncommitted changes included.

    pip's git+ install clones the committed HEAD, so the tree is copied and committed afresh.
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        if source.is_file():  # a tracked file deleted in the working tree stays deleted
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / relative)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    for command in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "--all"],
        ["commit", "--quiet", "-m", "snapshot"],
    ):
        subprocess.run([*git, *command], cwd=destination, check=True, capture_output=True)


def colab_like_environment(root: Path, snapshot: Path, data: Path) -> dict[str, str]:
    """Environment for the runner and its kernel: the venv first, the stub importable and imported
    at kernel start (as Colab's kernel does), the repository address redirected to ``snapshot``."""
    stubs = root / "stubs" / "google" / "colab"
    stubs.mkdir(parents=True)
    (stubs / "__init__.py").write_text(GOOGLE_COLAB_STUB)
    (stubs / "output.py").write_text(OUTPUT_STUB)
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab\n")

    kernel = root / "jupyter-data" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    argv = [str(root / "venv" / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernel / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Colab rehearsal", "language": "python"})
    )
    (root / "jupyter-config").mkdir()

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NBGRADER_EXECUTION", "TL_BACKBONE")
        and not key.startswith("GIT_CONFIG")
    }
    env.update(
        PATH=os.pathsep.join([str(root / "venv" / "bin"), env.get("PATH", "")]),
        PYTHONPATH=str(root / "stubs"),
        IPYTHONDIR=str(root / "ipython"),
        JUPYTER_PATH=str(root / "jupyter-data"),
        JUPYTER_CONFIG_DIR=str(root / "jupyter-config"),
        TL_DATA=str(data),
        TL_CACHE=str(root / "tl-cache"),
        # git, run by pip, fetches the repository's address from the snapshot instead.
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0=f"url.{snapshot.as_uri()}.insteadOf",
        GIT_CONFIG_VALUE_0=ADDRESS,
    )
    return env


def first_error(cells) -> str:
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                trace = "\n".join(output.traceback)[-3000:]
                return f"cell {cell.get('id')}: {output.ename}: {output.evalue}\n{trace}"
    return "no error output (the kernel died or timed out?)"


def seconds_taken(cell) -> float:
    """How long nbclient saw ``cell`` run, from the timestamps it records in the cell's metadata."""
    stamps = cell.metadata.get("execution", {})
    start, end = stamps.get("iopub.status.busy"), stamps.get("shell.execute_reply")
    if not (start and end):
        return float("nan")
    return (
        datetime.fromisoformat(end.rstrip("Z")) - datetime.fromisoformat(start.rstrip("Z"))
    ).total_seconds()


def text_output(cell) -> str:
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


@pytest.mark.colab
def test_notebook_runs_in_a_fresh_colab_like_environment(tmp_path):
    data = data_folder()
    if data is None:
        pytest.skip("ants-vs-bees data not found: set TL_DATA to the folder holding hymenoptera_data")
    root = tmp_path  # removed at the end, rather than kept by pytest with the last few runs
    timings, started = {}, time.perf_counter()
    try:
        # 1. A fresh virtualenv with only what Colab preinstalls. The borrowed packages sit in a
        #    folder outside the venv, so pip would refuse to uninstall them there.
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
        borrowed = requirement_closure(BORROWED)
        link_distributions(borrowed.values(), root / "preinstalled")
        python = root / "venv" / "bin" / "python"
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(site) / "colab-preinstalled.pth").write_text(f"{root / 'preinstalled'}\n")
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *PREINSTALLED], capture_output=True, text=True
        )
        assert pip.returncode == 0, f"installing {PREINSTALLED} failed:\n{pip.stderr[-3000:]}"
        timings["virtualenv"] = time.perf_counter() - started

        # 2. The repository, as pip on Colab will clone it, and the notebook with a probe at the end.
        snapshot = root / "snapshot"
        working_tree_snapshot(snapshot)
        env = colab_like_environment(root, snapshot, data)
        workdir = root / "work"
        workdir.mkdir()
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PROBE_CELL))
        nbformat.write(nb, workdir / "notebook.ipynb")
        (root / "run_notebook.py").write_text(RUNNER)

        # 3. Setup cell, then the notebook top to bottom, in the venv's kernel.
        step = time.perf_counter()
        result = subprocess.run(
            [str(python), str(root / "run_notebook.py"), "notebook.ipynb", "executed.ipynb", str(workdir)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        timings["notebook"] = time.perf_counter() - step
        executed_path = workdir / "executed.ipynb"
        assert executed_path.is_file(), f"the notebook runner failed:\n{result.stderr[-3000:]}"
        cells = nbformat.read(executed_path, as_version=4).cells
        assert result.returncode == 0, f"the notebook failed in the Colab rehearsal:\n{first_error(cells)}"

        setup_cell = next(cell for cell in cells if cell.get("id") == colab.SETUP_CELL_ID)
        timings["of which the setup cell"] = seconds_taken(setup_cell)
        assert text_output(setup_cell).startswith(f"Colab: installed tlhelpers @ git+{ADDRESS}; kept torch==")
        probe_line = re.search(r"^PROBE (.*)$", text_output(cells[-1]), re.MULTILINE)
        assert probe_line, f"the probe cell printed {text_output(cells[-1])!r}"
        probe = json.loads(probe_line.group(1))
        assert probe["executable"] == str(python)
        installed = Path(probe["tlhelpers"]).resolve()
        assert installed.is_relative_to(Path(site).resolve()), f"tlhelpers came from {installed}"
        assert not installed.is_relative_to(REPO) and not installed.is_relative_to(snapshot)
        assert probe["torch"] == importlib.metadata.version("torch"), "the setup cell changed torch"
        assert Path(probe["torch_file"]).parent.parent == root / "preinstalled", "torch was reinstalled"
        assert probe["ipywidgets"] == "7.7.1", "the setup cell upgraded Colab's ipywidgets"
        assert probe["widget_manager"] is True
    finally:
        step = time.perf_counter()
        shutil.rmtree(root, ignore_errors=True)
        timings["cleanup"] = time.perf_counter() - step
        timings["total"] = time.perf_counter() - started
        print("Colab rehearsal timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))

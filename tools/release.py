"""Regenerate the student notebooks in course/ from the reference notebooks in solutions/.

    .venv/bin/python tools/release.py           # rewrite course/ (what `make course` runs)
    .venv/bin/python tools/release.py --check   # exit 1 if course/ is not what solutions/ gives

Each assignment folder solutions/NN_name/ (holding NN_name.ipynb and any files it needs) goes
through `nbgrader generate_assignment` in a scratch copy of the course, so no gradebook or other
grading state is touched. The released notebooks are then normalized (no outputs or execution
counts, one kernelspec, fixed JSON layout) so that the same solutions always give byte-identical
files. The nbgrader cell metadata (grade ids, points, checksums, locks) is kept: `nbgrader autograde`
needs it in the copies learners hand in.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
NBGRADER_CONFIG = REPO / "nbgrader_config.py"
ASSIGNMENT_NAME = re.compile(r"^\d{2}_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

# Metadata that records how a notebook was last run or displayed, not what it teaches.
VOLATILE_CELL_METADATA = ("collapsed", "scrolled", "execution", "ExecuteTime", "colab", "outputId")
VOLATILE_NOTEBOOK_METADATA = ("widgets",)
SCRATCH_FILES = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc", ".DS_Store")


class ReleaseError(RuntimeError):
    """The solutions cannot be released as they are; the message says which file and why."""


def find_assignments(solutions_dir: Path) -> list[str]:
    """Names of the assignment folders in ``solutions_dir``, sorted.

    Every folder must be named NN_snake_case and hold a notebook of the same name.
    """
    if not solutions_dir.is_dir():
        raise ReleaseError(f"no solutions folder at {solutions_dir}")
    names = []
    for path in sorted(solutions_dir.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        if not ASSIGNMENT_NAME.match(path.name):
            raise ReleaseError(f"{path}: assignment folders must be named like 01_snake_case")
        if not (path / f"{path.name}.ipynb").is_file():
            raise ReleaseError(f"{path}: expected the notebook {path.name}.ipynb inside it")
        names.append(path.name)
    if not names:
        raise ReleaseError(f"{solutions_dir} holds no assignment folders: nothing to release")
    return names


def path_with_this_python() -> str:
    """PATH with this interpreter's bin folder first: nbgrader runs `alembic` from PATH."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def nbgrader_env(scratch: Path) -> dict[str, str]:
    """Environment for running nbgrader (and the kernels it starts) with this Python.

    The "python3" kernel is pinned to this interpreter by a kernelspec in ``scratch`` that
    JUPYTER_PATH puts ahead of any other; an empty JUPYTER_CONFIG_DIR keeps the user's own
    Jupyter and nbgrader settings out, so only the course's nbgrader_config.py applies.
    """
    kernel_dir = scratch / "jupyter-data" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True, exist_ok=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNELSPEC["display_name"],
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(kernel, indent=1))
    (scratch / "jupyter-config").mkdir(exist_ok=True)

    env = dict(os.environ)
    env["PATH"] = path_with_this_python()
    env["JUPYTER_PATH"] = str(scratch / "jupyter-data")
    env["JUPYTER_CONFIG_DIR"] = str(scratch / "jupyter-config")
    env.pop("NBGRADER_EXECUTION", None)
    return env


def make_scratch_course(solutions_dir: Path, assignments: list[str], root: Path) -> None:
    """Lay out a throwaway course in ``root``: our nbgrader config and copies of the assignments."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(NBGRADER_CONFIG, root / "nbgrader_config.py")
    for name in assignments:
        shutil.copytree(solutions_dir / name, root / "solutions" / name, ignore=SCRATCH_FILES)


def run_nbgrader(root: Path, env: dict[str, str], *args: str) -> str:
    """Run ``nbgrader <args>`` in the course at ``root``; return its log, raise if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise ReleaseError(f"`nbgrader {' '.join(args)}` failed (exit {result.returncode}):\n{log}")
    return log


def normalize_notebook(text: str, source: str) -> str:
    """A released notebook in canonical form: no outputs, our kernelspec, stable ids and layout."""
    nb = nbformat.reads(text, as_version=4)
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    for key in VOLATILE_NOTEBOOK_METADATA:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}

    seen_ids = set()
    for index, cell in enumerate(nb.cells):
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        # Ids come from the solution notebook; only fill in a missing or repeated one.
        if not cell.get("id") or cell.id in seen_ids:
            cell.id = f"cell-{index:03d}"
        if cell.id in seen_ids:
            raise ReleaseError(f"{source}: cannot give cell {index} a unique id")
        seen_ids.add(cell.id)

    nbformat.validate(nb)
    return nbformat.writes(nb).rstrip("\n") + "\n"


def build_release(solutions_dir: Path, destination: Path) -> list[Path]:
    """Generate the normalized release of every assignment into ``destination`` (created here).

    Returns the written files relative to ``destination``.
    """
    assignments = find_assignments(solutions_dir)
    with tempfile.TemporaryDirectory(prefix="tl-release-") as scratch_name:
        scratch = Path(scratch_name)
        root = scratch / "course-root"
        make_scratch_course(solutions_dir, assignments, root)
        # One nbgrader run releases every assignment folder in the scratch course.
        run_nbgrader(
            root,
            nbgrader_env(scratch),
            "generate_assignment",
            "--force",
            "--no-db",
            "--CourseDirectory.assignment_id=*",
        )

        generated = root / "course"
        for name in assignments:
            if not (generated / name / f"{name}.ipynb").is_file():
                raise ReleaseError(f"nbgrader did not release solutions/{name}/{name}.ipynb")

        written = []
        for path in sorted(p for p in generated.rglob("*") if p.is_file()):
            relative = path.relative_to(generated)
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".ipynb":
                text = normalize_notebook(path.read_text(encoding="utf-8"), f"solutions/{relative}")
                target.write_text(text, encoding="utf-8")
            else:
                shutil.copyfile(path, target)
            written.append(relative)
    return written


def tree_differences(expected: Path, actual: Path) -> list[tuple[str, str]]:
    """(status, relative path) for every file that differs between two folders.

    Status is "missing" (only in ``expected``), "extra" (only in ``actual``) or "changed".
    """

    def files(folder: Path) -> set[Path]:
        if not folder.is_dir():
            return set()
        return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}

    wanted, present = files(expected), files(actual)
    differences = [("missing", str(p)) for p in sorted(wanted - present)]
    differences += [("extra", str(p)) for p in sorted(present - wanted)]
    for relative in sorted(wanted & present):
        if (expected / relative).read_bytes() != (actual / relative).read_bytes():
            differences.append(("changed", str(relative)))
    return differences


def changed_lines(expected: Path, actual: Path, limit: int = 8) -> list[str]:
    """The first few lines of a unified diff between two text files, for the --check summary."""
    try:
        old = actual.read_text(encoding="utf-8").splitlines()
        new = expected.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return ["    (binary file)"]
    diff = list(difflib.unified_diff(old, new, "committed", "regenerated", n=0, lineterm=""))
    shown = ["    " + line for line in diff[2 : 2 + limit]]
    if len(diff) > 2 + limit:
        shown.append(f"    ... {len(diff) - 2 - limit} more diff lines")
    return shown


def replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` (same file system), never leaving ``target`` half-written."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)


def release(solutions_dir: Path, course_dir: Path) -> list[Path]:
    """Rewrite ``course_dir`` from ``solutions_dir``; returns the files written (relative)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{course_dir.name}.new-", dir=course_dir.parent))
    try:
        written = build_release(solutions_dir, staging)
        staging.chmod(0o755)
        replace_folder(staging, course_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return written


def check(solutions_dir: Path, course_dir: Path) -> list[tuple[str, str]]:
    """Differences between ``course_dir`` and a fresh release of ``solutions_dir`` (empty: in sync)."""
    with tempfile.TemporaryDirectory(prefix="tl-release-check-") as fresh_name:
        fresh = Path(fresh_name) / "course"
        build_release(solutions_dir, fresh)
        differences = tree_differences(fresh, course_dir)
        for status, relative in differences:
            print(f"  {status:8s} {course_dir.name}/{relative}")
            if status == "changed":
                print("\n".join(changed_lines(fresh / relative, course_dir / relative)))
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; fail if course/ is out of date")
    parser.add_argument("--solutions", type=Path, default=REPO / "solutions", help="reference notebooks")
    parser.add_argument("--course", type=Path, default=REPO / "course", help="student notebooks")
    args = parser.parse_args(argv)
    solutions_dir, course_dir = args.solutions.resolve(), args.course.resolve()

    try:
        if args.check:
            differences = check(solutions_dir, course_dir)
            if differences:
                sys.stdout.flush()
                print(
                    f"{course_dir} is not in sync with {solutions_dir}: {len(differences)} file(s) "
                    "differ (listed above). Run `make course` and commit the result.",
                    file=sys.stderr,
                )
                return 1
            print(f"{course_dir} is in sync with {solutions_dir}.")
            return 0
        written = release(solutions_dir, course_dir)
    except ReleaseError as error:
        print(f"release failed: {error}", file=sys.stderr)
        return 2
    print(f"Released {len(written)} file(s) into {course_dir}:")
    for relative in written:
        print(f"  {course_dir.name}/{relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

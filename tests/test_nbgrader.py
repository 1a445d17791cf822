"""End-to-end checks of the autograded course with the real nbgrader.

* every reference notebook in solutions/ carries valid nbgrader metadata;
* course/ is exactly what tools/release.py makes of solutions/;
* autograding the reference notebook gives full marks on every test cell, and autograding the
  untouched student copy from course/ gives zero on every graded cell.

Runs offline: nbgrader executes the notebooks with NBGRADER_EXECUTION set, so their heavy cells
skip. Takes a few minutes on two CPU cores, most of it in `nbgrader autograde`.
"""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from tlhelpers.cli import load_repository_tool

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
COURSE = REPO / "course"


release = load_repository_tool("release")

SOLUTION_NOTEBOOKS = sorted(
    path for path in SOLUTIONS.glob("*/*.ipynb") if not path.parent.name.startswith(".")
)
NOTHING_YET = "solutions/ holds no notebooks yet; these checks start once the first one is written"
EXERCISE_ID = re.compile(r"^ex(\d+)_[a-z0-9]+(_[a-z0-9]+)*$")


def notebook_params():
    if not SOLUTION_NOTEBOOKS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NOTHING_YET), id="none")]
    return [pytest.param(path, id=path.parent.name) for path in SOLUTION_NOTEBOOKS]


def grading_metadata(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def is_test_cell(cell) -> bool:
    """A cell nbgrader scores automatically (graded and not an answer to write)."""
    meta = grading_metadata(cell)
    return bool(meta.get("grade")) and not meta.get("solution")


def count_marker(source: str, marker: str) -> int:
    return sum(marker in line for line in source.splitlines())


def assignment_folders(parent: Path) -> set[str]:
    if not parent.is_dir():
        return set()
    return {p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_assignment_folders_are_named_and_released():
    if not SOLUTION_NOTEBOOKS:
        pytest.skip(NOTHING_YET)
    names = assignment_folders(SOLUTIONS)
    for name in sorted(names):
        assert release.ASSIGNMENT_NAME.match(name), f"solutions/{name}: name it NN_snake_case"
        notebooks = sorted(p.name for p in (SOLUTIONS / name).glob("*.ipynb"))
        assert notebooks == [f"{name}.ipynb"], (
            f"solutions/{name} must hold exactly one notebook, {name}.ipynb; found {notebooks}"
        )
    assert assignment_folders(COURSE) == names, (
        "course/ and solutions/ must hold the same assignment folders; run `make course`"
    )


@pytest.mark.parametrize("notebook", notebook_params())
def test_solution_notebook_metadata(notebook):
    where = notebook.relative_to(REPO)
    nb = nbformat.read(notebook, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), f"{where}: save it as nbformat 4.5 (cell ids)"
    assert nb.metadata.get("kernelspec") == release.KERNELSPEC, (
        f"{where}: kernelspec must be {release.KERNELSPEC}"
    )

    ids = [cell.get("id") for cell in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{where}: every cell needs its own id"

    grade_ids = []
    exercises_with_answers, graded_exercises, test_cells = set(), set(), 0
    for index, cell in enumerate(nb.cells):
        here = f"{where} cell {index}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{here}: clear its outputs"
        meta = grading_metadata(cell)
        begins = count_marker(cell.source, "BEGIN SOLUTION")
        hidden = count_marker(cell.source, "BEGIN HIDDEN TESTS")
        if not meta:
            assert begins == 0 and hidden == 0, (
                f"{here}: has solution/hidden-test markers but no nbgrader metadata"
            )
            continue

        grade_id = meta.get("grade_id")
        here = f"{where} cell {index} ({grade_id})"
        assert grade_id, f"{here}: nbgrader cells need a grade_id"
        grade_ids.append(grade_id)
        assert meta.get("schema_version") == 3, f"{here}: nbgrader schema_version must be 3"
        if not (meta.get("grade") or meta.get("solution") or meta.get("task")):
            continue
        exercise = EXERCISE_ID.match(grade_id)
        assert exercise, f"{here}: grade_id must start with its exercise, like ex1_preprocess"

        if meta.get("solution"):
            exercises_with_answers.add(exercise.group(1))
            if cell.cell_type == "code":
                ends = count_marker(cell.source, "END SOLUTION")
                assert begins >= 1, f"{here}: solution cell without ### BEGIN SOLUTION"
                assert begins == ends, f"{here}: {begins} BEGIN SOLUTION but {ends} END SOLUTION"
        else:
            assert begins == 0, f"{here}: BEGIN SOLUTION in a cell not marked as a solution"
        if meta.get("grade"):
            graded_exercises.add(exercise.group(1))  # by a test cell, or by hand for written answers
            points = meta.get("points")
            assert isinstance(points, (int, float)) and points > 0, f"{here}: graded cells need points > 0"
        if is_test_cell(cell):
            test_cells += 1
            ends = count_marker(cell.source, "END HIDDEN TESTS")
            assert hidden == ends, f"{here}: {hidden} BEGIN HIDDEN TESTS but {ends} END HIDDEN TESTS"
        else:
            assert hidden == 0, f"{here}: hidden tests only belong in test cells"

    duplicates = sorted({g for g in grade_ids if grade_ids.count(g) > 1})
    assert not duplicates, f"{where}: grade_ids used more than once: {duplicates}"
    assert test_cells, f"{where}: no graded test cell"
    ungraded = sorted(exercises_with_answers - graded_exercises)
    assert not ungraded, f"{where}: exercises {ungraded} have a solution cell but nothing graded"


@pytest.mark.parametrize("notebook", notebook_params())
def test_release_notebook_keeps_grading_metadata_and_hides_answers(notebook):
    name = notebook.parent.name
    released_path = COURSE / name / f"{name}.ipynb"
    assert released_path.is_file(), f"course/{name}/{name}.ipynb is missing; run `make course`"
    solution = nbformat.read(notebook, as_version=4)
    released = nbformat.read(released_path, as_version=4)

    assert released.metadata.get("kernelspec") == release.KERNELSPEC
    assert [c.get("id") for c in released.cells] == [c.get("id") for c in solution.cells], (
        f"course/{name}: cells differ from solutions/{name}; run `make course`"
    )
    assert [grading_metadata(c).get("grade_id") for c in released.cells] == [
        grading_metadata(c).get("grade_id") for c in solution.cells
    ], f"course/{name}: nbgrader metadata lost or changed; autograde needs it"
    for cell in released.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS"):
            assert marker not in cell.source, f"course/{name} cell {cell.id} shows {marker}"
        if is_test_cell(cell):
            assert "checksum" in grading_metadata(cell) and not cell.metadata.get("editable", True), (
                f"course/{name} cell {cell.id}: test cells must be locked and checksummed"
            )


def test_release_is_in_sync_with_solutions():
    if not SOLUTION_NOTEBOOKS:
        pytest.skip(NOTHING_YET)
    differences = release.check(SOLUTIONS, COURSE)
    assert not differences, (
        "course/ is not what tools/release.py makes of solutions/ "
        f"({', '.join(f'{status} {path}' for status, path in differences)}); run `make course`"
    )


def describe_outputs(cell) -> str:
    """The errors and stderr text of an executed cell, shortened for an assertion message."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}"[:400])
        elif output.output_type == "stream" and output.name == "stderr":
            parts.append(f"stderr: {output.text.strip()}"[:400])
    return "; ".join(parts) or "no error output"


def submissions(notebook: Path) -> dict[str, Path]:
    """The two copies handed in for grading: the reference solution and the untouched release."""
    name = notebook.parent.name
    return {"reference": notebook, "blank": COURSE / name / f"{name}.ipynb"}


def autograde_one(notebook: Path, student: str, scratch: Path, threads: int) -> tuple[Path, str]:
    """Grade one student's copy in a course of its own; return that course root and nbgrader's log.

    Each copy gets its own course and gradebook because SQLite gradebooks do not take concurrent
    writers, and grading copies in parallel is what keeps this test within a few minutes.
    """
    name = notebook.parent.name
    root = scratch / "course-root"
    release.make_scratch_course(SOLUTIONS, [name], root)
    env = release.nbgrader_env(scratch)
    env["OMP_NUM_THREADS"] = str(threads)
    # With the gradebook this time: it records the graded cells and points autograde needs.
    release.run_nbgrader(root, env, "generate_assignment", name, "--force")
    folder = root / "submitted" / student / name
    folder.mkdir(parents=True)
    shutil.copyfile(submissions(notebook)[student], folder / f"{name}.ipynb")
    return root, release.run_nbgrader(root, env, "autograde", name, "--force")


@pytest.fixture(scope="session")
def autograde_jobs(request, tmp_path_factory):
    """Futures of autograde_one for every notebook this session's autograde tests were given.

    All copies start grading as soon as the first such test runs, a few at a time.
    """
    notebooks = [
        item.callspec.params["notebook"]
        for item in request.session.items
        # nbval's notebook-cell items in the same session have no originalname.
        if getattr(item, "originalname", None) == "test_autograde_gives_solution_full_marks_and_release_zero"
        and item.callspec.params.get("notebook") is not None
    ]
    cpus = os.cpu_count() or 1
    workers = min(4, cpus)
    threads = max(1, cpus // workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = {}
        for notebook in notebooks:
            for student, copy in submissions(notebook).items():
                if copy.is_file():  # a missing release copy fails its test with a clear message
                    scratch = tmp_path_factory.mktemp(f"{notebook.parent.name}-{student}")
                    jobs[notebook.parent.name, student] = pool.submit(
                        autograde_one, notebook, student, scratch, threads
                    )
        yield jobs
        for job in jobs.values():
            job.cancel()


@pytest.mark.parametrize("notebook", notebook_params())
def test_autograde_gives_solution_full_marks_and_release_zero(notebook, autograde_jobs, monkeypatch):
    from nbgrader.api import Gradebook

    name = notebook.parent.name
    assert submissions(notebook)["blank"].is_file(), (
        f"course/{name}/{name}.ipynb is missing; run `make course`"
    )
    test_ids = {grading_metadata(c)["grade_id"] for c in nbformat.read(notebook, 4).cells if is_test_cell(c)}
    monkeypatch.setenv("PATH", release.path_with_this_python())  # the Gradebook runs `alembic`

    scores, executed = {}, {}
    for student in ("reference", "blank"):
        root, log = autograde_jobs[(name, student)].result()
        path = root / "autograded" / student / name / f"{name}.ipynb"
        assert path.is_file(), f"autograde produced nothing for {student} (kernel died?)\n{log[-3000:]}"
        cells = nbformat.read(path, as_version=4).cells
        executed[student] = {grading_metadata(c).get("grade_id"): c for c in cells}
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            grades = gradebook.find_submission_notebook(name, name, student).grades
            scores[student] = {grade.name: (grade.auto_score, grade.max_score) for grade in grades}

    assert test_ids and test_ids <= set(scores["reference"]), f"{name}: gradebook lacks the test cells"
    problems = []
    for grade_id in sorted(test_ids):
        score, max_score = scores["reference"][grade_id]
        if score != max_score:
            details = describe_outputs(executed["reference"][grade_id])
            problems.append(f"solution scores {score}/{max_score} on {grade_id}: {details}")
    for grade_id, (score, max_score) in sorted(scores["blank"].items()):
        if score != 0:
            problems.append(
                f"untouched release scores {score}/{max_score} on {grade_id}: "
                "the test passes without the learner's code"
            )
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)

"""Tests of the headless grader (tlhelpers.grading, ``tlcourse``).

Fast unit tests first; then one end-to-end run that grades the sample submissions in
tests/submissions/ (one per common mistake and one per hostile or broken hand-in, mostly on
02_freezing) plus the reference solutions of the whole course, and checks every CSV row and
feedback page. The end-to-end run takes two to three minutes on two CPU cores.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from tlhelpers import cli, grading

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).resolve().parent / "submissions"
SOLUTIONS = REPO / "solutions"
FREEZING = "02_freezing"
HEAD = "03_replacing_the_head"


def test_hidden_tests_are_stripped():
    source = "check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, seed=1)\n### END HIDDEN TESTS\nprint('done')"
    assert grading.strip_hidden_tests(source) == "check(f)\nprint('done')"
    assert grading.hidden_lines(source) == ["check(f, seed=1)"]


def test_extract_definitions_keeps_definitions_and_drops_top_level_code():
    source = (
        "import torch\n"
        "from torch import nn\n"
        "LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)\n"
        "print('hello')\n"
        "check_freeze = make_fake()\n"
        "tl.checks.check_freeze = None\n"
        "def freeze(model):\n    return model\n"
        "class Helper:\n    pass\n"
    )
    kept, dropped = grading.extract_definitions(source)
    assert "def freeze" in kept and "class Helper" in kept and "LAYERS = " in kept and "import torch" in kept
    assert dropped == ["print('hello')", "check_freeze = make_fake()", "tl.checks.check_freeze = None"]


PROTECTED = {"check_freeze", "AssertionError", "tl", "tlhelpers", "checks"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def check_freeze(fn, seed=0):\n    pass", "redefines check_freeze"),
        ("AssertionError = Exception", "redefines AssertionError"),
        ("class Fake(int):\n    def __eq__(self, other):\n        return True", "uses __eq__"),
        ("X = type('X', (int,), {'__eq__': lambda s, o: True})", "uses __eq__"),
        ("import os\ndef f(model):\n    os._exit(0)", "imports os"),
        ("import builtins", "imports builtins"),
        ("def f(model):\n    tl.checks._call = None", "changes tl.checks._call"),
        ("import torch\ndef f(m):\n    torch.equal = lambda a, b: True", "changes torch.equal"),
        ("def f(m):\n    return eval('1')", "uses eval()"),
        (
            "def f(m):\n    try:\n        1 / 0\n    except Exception as e:\n        e.tb_frame",
            "tb_frame",
        ),
        ("def f(m):\n    global check_freeze\n    check_freeze = None", "rebinds check_freeze"),
    ],
)
def test_find_tampering_flags_what_could_fool_the_checks(code, expected):
    problems = grading.find_tampering(code, PROTECTED)
    assert any(expected in problem for problem in problems), problems


def test_find_tampering_accepts_honest_answers():
    honest = (
        "import copy\nfrom torch import nn\n\n"
        "class Head(nn.Module):\n    def __init__(self, n):\n        super().__init__()\n"
        "        self.fc = nn.Linear(4, n)\n\n"
        "def replace_head(model, num_classes):\n"
        "    name, old = tl.find_head(model)\n"
        "    parent, _, child = name.rpartition('.')\n"
        "    setattr(model.get_submodule(parent), child, nn.Linear(old.in_features, num_classes))\n"
        "    return model\n"
    )
    assert grading.find_tampering(honest, PROTECTED) == []


def _notebook_with(grade_ids: list[str]) -> str:
    nb = nbformat.v4.new_notebook()
    for grade_id in grade_ids:
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": False, "solution": True}
        nb.cells.append(cell)
    return nbformat.writes(nb)


@pytest.fixture(scope="module")
def assignments():
    return {name: grading.read_assignment(SOLUTIONS, name) for name in (FREEZING, HEAD)}


def test_collect_submissions_understands_every_layout(tmp_path, assignments):
    freezing_ids = sorted(assignments[FREEZING].grade_ids)
    (tmp_path / "submitted" / "ann" / FREEZING).mkdir(parents=True)
    (tmp_path / "submitted" / "ann" / FREEZING / f"{FREEZING}.ipynb").write_text(_notebook_with(freezing_ids))
    (tmp_path / "submitted" / "ben").mkdir()
    (tmp_path / "submitted" / "ben" / "my homework.ipynb").write_text(_notebook_with(freezing_ids))
    (tmp_path / "submitted" / f"cy__{HEAD}.ipynb").write_text("not json")
    (tmp_path / "submitted" / "nobody.ipynb").write_text("{}")

    handins, notes, warnings = grading.collect_submissions(tmp_path, assignments)

    assert sorted(handins) == ["ann", "ben", "cy"]
    assert handins["ann"][FREEZING].notes == []
    assert "my homework.ipynb" in handins["ben"][FREEZING].notes[0]  # matched by its cell ids
    assert list(handins["cy"]) == [HEAD]  # unreadable, matched by name
    assert len(warnings) == 1 and "nobody.ipynb" in warnings[0]


def test_collect_submissions_refuses_a_missing_folder(tmp_path, assignments):
    with pytest.raises(grading.GradingError, match="does not exist"):
        grading.collect_submissions(tmp_path / "nope", assignments)


@pytest.mark.filterwarnings("ignore:Non-unique cell id")
def test_prepare_notebook_reports_edits_and_repairs_ids(tmp_path, assignments):
    nb = nbformat.read(SAMPLES / f"edited_test__{FREEZING}.ipynb", as_version=4)
    nb.cells[2].id = nb.cells[1].id  # a repeated cell id breaks nbgrader
    source = tmp_path / "in.ipynb"
    nbformat.write(nb, source)
    target = tmp_path / "out" / "nb.ipynb"

    usable, notes = grading.prepare_notebook(grading.Handin(source), assignments[FREEZING], target)

    assert usable
    assert notes == ["test cell ex1_freeze_test was edited; it was graded as originally written"]
    ids = [cell.id for cell in nbformat.read(target, as_version=4).cells]
    assert len(set(ids)) == len(ids)
    usable, notes = grading.prepare_notebook(
        grading.Handin(SAMPLES / f"garbage__{FREEZING}.ipynb"), assignments[FREEZING], target
    )
    assert not usable and "not a readable notebook" in notes[0]


def test_run_limited_stops_runaway_processes(tmp_path):
    limits = grading.Limits(memory_gb=0.3, cpu_seconds=30)
    env = grading.grading_env(tmp_path)
    hog = "x = []\nwhile True:\n    x.append(bytearray(50_000_000))\n    x[-1][::4096] = b'1' * 12208\n"
    completed = grading.run_limited(
        [sys.executable, "-c", hog], cwd=tmp_path, env=env, limits=limits, timeout=30
    )
    assert completed.returncode != 0 and ("MemoryError" in completed.output or "memory" in completed.stopped)

    loop = [sys.executable, "-c", "while True: pass"]
    completed = grading.run_limited(loop, cwd=tmp_path, env=env, limits=limits, timeout=1)
    assert completed.returncode != 0 and "time limit" in completed.stopped


def test_watchdog_stops_a_tree_that_the_data_limit_cannot(tmp_path):
    """Eight processes under the per-process data limit, together over the limit plus the headroom."""
    limits = grading.Limits(memory_gb=0.2, cpu_seconds=60)
    child = "import time\nb = bytearray(190_000_000)\nb[::4096] = b'1' * len(b[::4096])\ntime.sleep(60)\n"
    parent = (
        "import subprocess, sys\n"
        f"children = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(8)]\n"
        "[c.wait() for c in children]\n"
    )
    env = grading.grading_env(tmp_path)
    completed = grading.run_limited(
        [sys.executable, "-c", parent], cwd=tmp_path, env=env, limits=limits, timeout=50
    )
    assert "memory" in completed.stopped, completed


def test_a_notebook_counts_as_autograded_only_when_every_test_cell_is_scored():
    tests = ["ex1_test", "ex2_test"]
    assert grading._fully_scored(
        {"ex1_test": (0.0, 2.0), "ex2_test": (3.0, 3.0), "report": (None, 3.0)}, tests
    )
    assert not grading._fully_scored({"ex1_test": (2.0, 2.0), "ex2_test": (None, 3.0)}, tests)
    assert not grading._fully_scored({"ex1_test": (2.0, 2.0)}, tests)
    assert not grading._fully_scored(None, tests)


def test_recheck_catches_patching_at_call_time(tmp_path):
    """A learner function that patches the checks while it runs is caught by the integrity records."""
    definitions = (
        "import tlhelpers\n"
        "def freeze(model):\n"
        "    setattr(tlhelpers.checks, '_expect_model_back', lambda *args: None)\n"
        "    return None\n"
    )
    honest = "def freeze(model):\n    return model.requires_grad_(False)\n"  # passes when checked alone
    setup = "from tlhelpers.checks import check_freeze"
    tests = [{"grade_id": "ex1_freeze_test", "source": "check_freeze(freeze)"}]
    jobs = [
        {"assignment": "cheat", "setup": setup, "definitions": definitions, "tests": tests},
        {"assignment": "honest", "setup": setup, "definitions": honest, "tests": tests},
    ]
    results = grading.verify(jobs, course=tmp_path, limits=grading.Limits(verify_timeout=60))

    cheat = results[("cheat", "ex1_freeze_test")]
    assert cheat["passed"] is False and cheat.get("tampered")
    assert "_expect_model_back" in cheat["message"]
    assert results[("honest", "ex1_freeze_test")]["passed"] is False  # not checked after tampering


def test_split_courses_spreads_notebooks_and_leaves_the_template_alone(tmp_path):
    template = tmp_path / "template"
    (template / "source").mkdir(parents=True)
    (template / "gradebook.db").write_text("empty")
    course = tmp_path / "student" / "course"
    shutil.copytree(template, course)
    names = ["01_a", "02_b", "03_c"]
    for name in names:
        handed_in = course / "submitted" / grading.LEARNER_ID / name / f"{name}.ipynb"
        handed_in.parent.mkdir(parents=True)
        handed_in.write_text(name)

    course_of = grading._split_courses(course, template, names, processes=2)

    second = tmp_path / "student" / "course-1"
    assert course_of == {"01_a": course, "02_b": second, "03_c": course}
    for name, home in course_of.items():
        assert (home / "submitted" / grading.LEARNER_ID / name / f"{name}.ipynb").read_text() == name
    assert not (course / "submitted" / grading.LEARNER_ID / "02_b").exists()
    assert (second / "gradebook.db").read_text() == "empty"
    assert sorted(p.name for p in template.iterdir()) == ["gradebook.db", "source"]
    assert grading._split_courses(course, template, ["01_a"], processes=4) == {"01_a": course}


def test_write_csv_is_complete_and_leaves_no_temporary_file(tmp_path):
    rows = [
        grading.Result("bo", FREEZING, 5, 7, "graded", {"ex1": (2, 2)}, ["a, b | c"]),
        grading.Result("al", FREEZING, 0, 7, "missing", {}, []),
    ]
    grading.write_csv(rows, tmp_path / "grades.csv")
    with open(tmp_path / "grades.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [r["student"] for r in read] == ["al", "bo"]
    assert read[1]["exercises"] == "ex1=2/2" and read[1]["notes"] == "a, b | c"
    assert [p.name for p in tmp_path.iterdir()] == ["grades.csv"]


def test_cli_reports_a_missing_submissions_folder(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_doctor_reports_each_part(monkeypatch, capsys):
    from tlhelpers import models

    monkeypatch.setattr(models, "_url_answers", lambda url, timeout: False)  # never touch the network
    status = cli.main(["doctor"])
    printed = capsys.readouterr().out
    for part in ("torch", "backbone auto", "data", "nbgrader", "kernel"):
        assert f"] {part}:" in printed, printed
    assert status == 0, printed


# --------------------------------------------------------------------------- end to end


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the samples plus the whole course's reference solutions (as student "reference")."""
    root = tmp_path_factory.mktemp("grading")
    submissions = root / "submissions"
    shutil.copytree(SAMPLES, submissions)
    for notebook in sorted(SOLUTIONS.glob("*/*.ipynb")):
        target = submissions / "reference" / notebook.parent.name / notebook.name
        target.parent.mkdir(parents=True)
        shutil.copyfile(notebook, target)
    before = _tree_digest(submissions)
    out = root / "out"
    limits = grading.Limits(
        cell_timeout=30,
        verify_timeout=30,
        memory_gb=3,
        student_timeout=600,
        cpu_seconds=600,
        processes_per_student=2,  # the reference student's six notebooks in two nbgrader processes
    )
    results = grading.grade_folder(submissions, out, jobs=2, limits=limits, log=lambda message: None)
    with open(out / "grades.csv", newline="") as handle:
        rows = {(r["student"], r["assignment"]): r for r in csv.DictReader(handle)}
    return {"results": results, "rows": rows, "out": out, "unchanged": before == _tree_digest(submissions)}


def _exercises(row) -> dict[str, float]:
    return {
        item.split("=")[0]: float(item.split("=")[1].split("/")[0]) for item in row["exercises"].split(";")
    }


def _feedback(graded, student, assignment=FREEZING) -> str:
    return (graded["out"] / graded["rows"][(student, assignment)]["feedback"]).read_text(encoding="utf-8")


EXPECTED_FREEZING = {
    # student: (score, status, text in notes, points lost by exercise)
    "perfect": (7, "graded", "", {}),
    "untouched": (0, "graded", "", {"ex1_freeze_test": 2, "ex2_count_parameters_test": 2}),
    "counts_tensors": (5, "graded", "", {"ex2_count_parameters_test": 2}),
    "bn_still_training": (4, "graded", "", {"ex3_freeze_batchnorm_test": 3}),
    "looper": (5, "graded", "", {"ex1_freeze_test": 2}),
    "exiter": (7, "autograde-failed", "kernel died", {}),
    "hog": (7, "graded", "", {}),
    "chatty": (7, "graded", "", {}),
    "syntax": (5, "graded", "syntax error", {"ex2_count_parameters_test": 2}),
    "deleted_test": (7, "graded", "ex1_freeze_test was deleted", {}),
    "edited_test": (5, "graded", "ex1_freeze_test was edited", {"ex1_freeze_test": 2}),
    "patched_check": (5, "flagged", "redefines check_freeze", {"ex1_freeze_test": 2}),
    "rigged_eq": (5, "flagged", "uses __eq__", {"ex2_count_parameters_test": 2}),
    "sneaky": (4, "flagged", "changes tl.checks._call", {"ex3_freeze_batchnorm_test": 3}),
    "renamed": (7, "graded", "'Copy of 02_freezing (1).ipynb'", {}),
    "garbage": (0, "unreadable", "not a readable notebook", {}),
    "missing": (0, "missing", "no notebook", {}),
}


def test_every_student_gets_one_row_per_assignment(graded):
    students = {student for student, _ in graded["rows"]}
    assert students == set(EXPECTED_FREEZING) | {"reference", "swapper"}
    assignments = {path.parent.name for path in SOLUTIONS.glob("*/*.ipynb")}
    assert set(graded["rows"]) == {(s, a) for s in students for a in assignments}
    assert len(graded["results"]) == len(graded["rows"])
    assert graded["unchanged"], "grading changed the submissions folder"


@pytest.mark.parametrize("student", sorted(EXPECTED_FREEZING))
def test_sample_grade_and_reason(graded, student):
    score, status, note, lost = EXPECTED_FREEZING[student]
    row = graded["rows"][(student, FREEZING)]
    assert (float(row["score"]), row["status"]) == (score, status), str(row)
    assert note in row["notes"], str(row)
    if status not in ("missing", "unreadable"):
        maximum = {e.grade_id: e.points for e in grading.read_assignment(SOLUTIONS, FREEZING).exercises}
        if student != "untouched":
            assert _exercises(row) == {g: points - lost.get(g, 0) for g, points in maximum.items()}, str(row)


def test_reference_solutions_get_full_marks(graded):
    for (student, _), row in graded["rows"].items():
        if student == "reference":
            assert row["score"] == row["max_score"] and row["status"] == "graded", row


def test_swap_before_freeze_loses_exactly_that_exercise(graded):
    row = graded["rows"][("swapper", HEAD)]
    assert _exercises(row) == {"ex1_replace_head_test": 3, "ex2_build_feature_extractor_test": 0}, row
    assert graded["rows"][("swapper", FREEZING)]["status"] == "missing"


def test_feedback_names_the_mistake(graded):
    assert "counted parameter tensors, not numbers" in _feedback(graded, "counts_tensors")
    assert "Grade: 5 / 7" in _feedback(graded, "counts_tensors")
    assert "kernel died" in _feedback(graded, "exiter")


def test_feedback_never_shows_hidden_tests(graded):
    secrets = {
        line.strip()
        for notebook in SOLUTIONS.glob("*/*.ipynb")
        for exercise in grading.read_assignment(SOLUTIONS, notebook.parent.name).exercises
        for line in grading.hidden_lines(exercise.source)
    }
    assert secrets
    pages = sorted((graded["out"] / "feedback").rglob("*.html"))
    assert len(pages) == len(graded["rows"])
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "HIDDEN TESTS" not in text, page
        for secret in secrets:
            assert secret not in text, f"{page} shows the hidden test {secret!r}"


def test_printing_is_cut_short_in_feedback(graded):
    assert len(_feedback(graded, "chatty")) < 2_000_000


def test_output_folder_holds_only_results(graded):
    names = {p.relative_to(graded["out"]).parts[0] for p in graded["out"].iterdir()}
    assert names == {"grades.csv", "feedback"}
    assert not [p for p in graded["out"].rglob("*") if p.name.startswith(".")]
    json.dumps([r.row() for r in graded["results"]])  # rows are plain strings

"""Generate the grading samples in tests/submissions/ from the 02 and 03 solution and release notebooks.

    .venv/bin/python tools/make_grading_samples.py [OUT]   # OUT defaults to tests/submissions

Rerun it when the grade ids or setup cells of 02_freezing or 03_replacing_the_head change.
"""

import copy
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import release  # noqa

out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "submissions"
if out.exists():
    shutil.rmtree(out)
out.mkdir(parents=True)
course = Path(tempfile.mkdtemp()) / "course"
release.build_release(REPO / "solutions", course)


def meta(c):
    return c.metadata.get("nbgrader", {})


def answered(name):
    """The release notebook with every answer cell filled in with the reference answer."""
    sol = nbformat.read(REPO / "solutions" / name / f"{name}.ipynb", 4)
    rel = nbformat.read(course / name / f"{name}.ipynb", 4)
    answers = {meta(c)["grade_id"]: c.source for c in sol.cells if meta(c).get("solution")}
    for c in rel.cells:
        if meta(c).get("solution"):
            c.source = "\n".join(
                line
                for line in answers[meta(c)["grade_id"]].split("\n")
                if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
            )
    return rel


def minimal(nb):
    """What a learner who deleted every demo cell hands in: setup, answers and tests."""
    nb = copy.deepcopy(nb)
    nb.cells = [
        c for c in nb.cells if c.get("id") == "setup" or meta(c).get("grade") or meta(c).get("solution")
    ]
    return nb


def cell(nb, grade_id):
    return next(c for c in nb.cells if meta(c).get("grade_id") == grade_id)


def after(nb, grade_id, source):
    index = next(i for i, c in enumerate(nb.cells) if meta(c).get("grade_id") == grade_id)
    new = nbformat.v4.new_code_cell(source)
    new.id = f"added-{index}"
    nb.cells.insert(index + 1, new)
    return nb


def save(nb, relative):
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.write(nb, path)


F = "02_freezing"
base = minimal(answered(F))
save(base, f"perfect__{F}.ipynb")
save(nbformat.read(course / F / f"{F}.ipynb", 4), f"untouched__{F}.ipynb")

nb = copy.deepcopy(base)
cell(nb, "ex2_count_parameters").source = (
    "def count_parameters(model):\n"
    "    parameters = list(model.parameters())\n"
    "    return sum(1 for p in parameters if p.requires_grad), len(parameters)\n"
)
save(nb, f"counts_tensors__{F}.ipynb")

nb = copy.deepcopy(base)
cell(nb, "ex3_freeze_batchnorm").source = (
    "def freeze_batchnorm(model):\n"
    "    for module in model.modules():\n"
    "        if isinstance(module, nn.modules.batchnorm._BatchNorm):\n"
    "            for parameter in module.parameters():\n"
    "                parameter.requires_grad = False\n"
    "    return model\n"
)
save(nb, f"bn_still_training__{F}.ipynb")

nb = copy.deepcopy(base)
cell(nb, "ex1_freeze").source = "def freeze(model):\n    while True:\n        pass\n"
save(nb, f"looper__{F}.ipynb")

save(after(copy.deepcopy(base), "ex1_freeze_test", "import os\n\nos._exit(1)\n"), f"exiter__{F}.ipynb")
save(
    after(
        copy.deepcopy(base),
        "ex1_freeze_test",
        "hoard = []\nfor _ in range(64):\n    hoard.append(bytearray(2**28))  # 16 GB in 256 MB steps\n",
    ),
    f"hog__{F}.ipynb",
)
save(
    after(copy.deepcopy(base), "ex1_freeze_test", 'for i in range(100_000):\n    print("line", i)\n'),
    f"chatty__{F}.ipynb",
)

nb = copy.deepcopy(base)
cell(nb, "ex2_count_parameters").source = "def count_parameters(model)\n    return 0, 0\n"
save(nb, f"syntax__{F}.ipynb")

nb = copy.deepcopy(base)
nb.cells = [c for c in nb.cells if meta(c).get("grade_id") != "ex1_freeze_test"]
save(nb, f"deleted_test__{F}.ipynb")

nb = copy.deepcopy(base)
cell(nb, "ex1_freeze").source = "def freeze(model):\n    return model\n"
cell(nb, "ex1_freeze_test").source = 'print("freeze works")\n'
save(nb, f"edited_test__{F}.ipynb")

nb = copy.deepcopy(base)
cell(
    nb, "ex1_freeze"
).source = (
    'def freeze(model):\n    return model\n\n\ndef check_freeze(fn, seed=0):\n    """Always happy."""\n'
)
save(nb, f"patched_check__{F}.ipynb")

nb = copy.deepcopy(base)
cell(nb, "ex2_count_parameters").source = (
    "class Anything(int):\n"
    "    def __eq__(self, other):\n"
    "        return True\n\n\n"
    "def count_parameters(model):\n"
    "    return Anything(0), Anything(0)\n"
)
save(nb, f"rigged_eq__{F}.ipynb")

nb = copy.deepcopy(base)
cell(nb, "ex3_freeze_batchnorm").source = (
    "def freeze_batchnorm(model):\n"
    "    tl.checks._call = lambda fn, name, *args, **kwargs: args[0]\n"
    "    return model\n"
)
save(nb, f"sneaky__{F}.ipynb")

(out / f"garbage__{F}.ipynb").write_text('{"cells": [ this is not JSON\n')
save(base, f"renamed/Copy of {F} (1).ipynb")
(out / "missing").mkdir()
(out / "missing" / "README.txt").write_text(
    "This learner handed in nothing (the folder holds no notebook).\n"
)

H = "03_replacing_the_head"
nb = minimal(answered(H))
cell(nb, "ex2_build_feature_extractor").source = (
    "def build_feature_extractor(model, num_classes):\n"
    "    replace_head(model, num_classes)\n"
    "    for parameter in model.parameters():\n"
    "        parameter.requires_grad = False\n"
    "    return model\n"
)
save(nb, f"swapper/{H}.ipynb")
print(sorted(str(p.relative_to(out)) for p in out.rglob("*")))

"""nbgrader configuration for the course.

The reference notebooks (with solutions and hidden tests) live in solutions/<assignment>/ and the
student copies that `make course` generates from them live in course/<assignment>/. Grading state
(gradebook.db, submitted/, autograded/, feedback/) is created next to this file and is gitignored.
"""

import os

c = get_config()  # noqa: F821 (injected by traitlets when it loads this file)

# The course root is the folder holding this file, wherever nbgrader is started from.
# The gradebook defaults to <root>/gradebook.db; tools/release.py and the tests override
# the root (and so the gradebook) to work in a temporary copy of the course.
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "course"

# Student copies: the solution region becomes this stub, outputs are cleared.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading: a cell that imports torch or loads a model can take far longer than the 30 s default
# on a CPU-only grading server; retry once because a freshly started kernel is sometimes slow.
c.Execute.timeout = 300
c.Execute.startup_timeout = 120
c.Execute.execute_retries = 1

# Keep autograded notebooks and feedback readable when a learner prints in a loop.
c.LimitOutput.max_lines = 200
c.LimitOutput.max_traceback = 50

# A learner who deletes a test cell still gets it graded (the cell is restored from the gradebook).
c.OverwriteCells.add_missing_cells = True

# Any stderr output in a test cell scores zero, and torch writes harmless warnings there
# (NNPACK on some CPUs, UserWarning/FutureWarning from torchvision, weight downloads, tqdm bars).
# An output block is dropped when it matches; real failures are error outputs, not stderr text.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = (
    r"(?m)(NNPACK|^\[W[\d ]|Warning: |^\s*warnings\.warn\(|^Downloading[: ]|\d+%\|.*\| *\d+/\d+)"
)

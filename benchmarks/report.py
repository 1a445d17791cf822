"""Writing the results: results.json (everything), results.md (the tables) and benchmarks.png (the plot)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .course import GRADING_SECONDS_BUDGET
from .strategies import FEATURE_EXTRACTION_TARGET

SECTION_TITLES = {
    "head": "1. Training the head: textbook loop vs cached features",
    "strategies": "2. Strategy comparison",
    "diagnosis": "2b. Fine-tuning diagnosis: BatchNorm and augmentation, one change at a time",
    "efficiency": "2c. Data efficiency of feature extraction",
    "course": "3. Cost of running the course (solution notebooks under nbval)",
    "grading": "4. Cost of grading (nbgrader autograde and tlcourse grade, complete submissions)",
}
PLOT_NAME = "benchmarks.png"
NOTEBOOK_HEAD_EPOCHS = 30  # what 04_training_the_head trains its linear head for


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_results(out_dir: Path) -> dict:
    """The results.json in ``out_dir``, or an empty record when there is none yet."""
    path = out_dir / "results.json"
    if not path.is_file():
        return {"sections": {}}
    return json.loads(path.read_text())


def _bytes(value) -> str:
    if value is None:
        return "n/a"
    if value >= 1024**3:
        return f"{value / 1024**3:.2f} GiB"
    return f"{value / 1024**2:.0f} MiB"


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "**MISS**"


def _acc(mean: float, std: float | None = None) -> str:
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _targets_table(targets: list[dict]) -> list[str]:
    lines = ["| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {_verdict(t['passed'])} |" for t in targets]
    return lines


def _machine_line(machine: dict) -> str:
    device = machine["device_name"] if machine["device"] == "cuda" else f"CPU only ({machine['cpu']})"
    reason = f" ({machine['backbone_reason']})" if machine.get("backbone_reason") else ""
    return (
        f"Measured {machine['date']} on {device}, {machine['cpu_cores']} CPU cores "
        f"({machine['torch_threads']} torch threads), torch {machine['torch']}, "
        f"torchvision {machine['torchvision']}, Python {machine['python']}; backbone "
        f"`{machine.get('backbone', 'n/a')}`{reason}; 1-min load average at the start: "
        f"{machine['load_average_1min']}."
    )


def _head_section(head: dict, results: dict) -> list[str]:
    s, textbook, cached = head["settings"], head["textbook"], head["cached"]
    lines = [
        f"{s['epochs']} epochs, batch {s['batch_size']}, Adam lr {s['lr']:g}, seed {s['seed']}, "
        f"{s['train_images']} training and {s['val_images']} validation images, {s['transforms']}; "
        "same head initialisation and batch order on both paths. The textbook loop keeps the frozen "
        "backbone in eval mode (so both paths compute the same function) and validates once, after the "
        "last epoch; the cached path extracts without the on-disk feature cache (the cold cost) and "
        "validates every epoch on the cached features.",
        "",
        "| path | val acc | wall time | where the time goes | peak memory |",
        "|---|---|---|---|---|",
        f"| textbook loop (frozen backbone runs on every batch of every epoch) | {textbook['val_acc']:.3f} "
        f"| {textbook['seconds']:.1f} s | {textbook['seconds_per_epoch']:.1f} s per epoch, "
        f"{textbook['validation_seconds']:.1f} s validation | {_bytes(textbook['peak_memory_bytes'])} |",
        f"| `tl.extract_features` once + `tl.train_linear_head` | {cached['val_acc']:.3f} "
        f"| {cached['seconds']:.1f} s | {cached['extraction_seconds']:.1f} s extraction (train + val), "
        f"{cached['head_seconds']:.1f} s head | {_bytes(cached['peak_memory_bytes'])} |",
        "",
        f"Speed-up: **{head['speedup']:.1f}x**; accuracy difference (cached - textbook): "
        f"{head['accuracy_difference']:+.3f}.",
        "",
        *_targets_table(head["targets"]),
    ]
    needed = head.get("epochs_for_target")
    if needed is not None:
        epochs = NOTEBOOK_HEAD_EPOCHS
        head_per_epoch = cached["head_seconds"] / s["epochs"]
        projected = (epochs * textbook["seconds_per_epoch"] + textbook["validation_seconds"]) / (
            cached["extraction_seconds"] + epochs * head_per_epoch
        )
        lines += [
            "",
            f"Note: the textbook loop pays about {textbook['seconds_per_epoch']:.1f} s for every epoch, "
            f"the cached path pays {cached['extraction_seconds']:.1f} s once, so the speed-up grows with "
            f"the number of epochs: at these measured costs it passes 10x from {needed} epochs, and for "
            f"the {epochs} epochs notebook 04 trains its head it comes to about {projected:.0f}x "
            "(projected from the costs above, not measured).",
        ]
    return lines


STRATEGY_LABELS = {
    "scratch": "from scratch (random init, all layers)",
    "feature_extraction": "feature extraction (frozen backbone, linear head on cached features)",
    "fine_tuning": "full fine-tuning at a lower LR",
    "discriminative": "fine-tuning with discriminative LRs (`tl.param_groups`)",
    "two_stage": "two-stage: head first, then unfreeze everything",
}


def _strategy_epochs(name: str, s: dict) -> str:
    if name == "feature_extraction":
        return f"{s['head_epochs']} (head)"
    if name == "two_stage":
        return f"{s['head_epochs']} (head) + {s['finetune_epochs']}"
    return str(s["finetune_epochs"])


def _strategy_lr(name: str, s: dict) -> str:
    return {
        "scratch": f"{s['scratch_lr']:g}",
        "feature_extraction": f"{s['head_lr']:g}",
        "fine_tuning": f"{s['finetune_lr']:g}",
        "discriminative": f"head {s['head_lr']:g}, backbone {s['finetune_lr']:g}",
        "two_stage": f"{s['head_lr']:g}, then {s['finetune_lr']:g}",
    }[name]


def _strategies_section(section: dict, results: dict) -> list[str]:
    s = section["settings"]
    seeds = len(s["seeds"])
    lines = []
    if seeds < 3:
        lines += [f"**Reduced run: {seeds} seed(s) instead of 3** (see the note below).", ""]
    lines += [
        f"Seeds {s['seeds']}; batch {s['batch_size']}; Adam; {s['train_images']} training images "
        f"(random resized crop + flip for the trained-end-to-end strategies, eval preprocessing for "
        f"feature extraction); accuracy on all {s['val_images']} validation images after the last epoch.",
        "",
        "| strategy | epochs | LR | val acc (mean ± std) | wall time per run | trainable params "
        "| peak memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in section["strategies"].items():
        lines.append(
            f"| {STRATEGY_LABELS.get(name, name)} | {_strategy_epochs(name, s)} | {_strategy_lr(name, s)} "
            f"| {_acc(result['val_acc_mean'], result['val_acc_std'])} | {result['seconds_mean']:.0f} s "
            f"| {result['trainable_parameters']:,} | {_bytes(result['peak_memory_bytes'])} |"
        )
    fine_tuning = section["strategies"].get("fine_tuning")
    if fine_tuning is not None:
        per_epoch = fine_tuning["seconds_mean"] / s["finetune_epochs"]
        lines += [
            "",
            f"One end-to-end run costs about {per_epoch:.0f} s per epoch here (full fine-tuning's wall "
            "time divided by its epochs, one validation pass included); that cost decided the epochs "
            "of the end-to-end strategies, which all get the same number.",
        ]
    lines += ["", *_targets_table(section["targets"])]
    explanation = _feature_extraction_note(results)
    if explanation:
        lines += ["", f"Note: {explanation}"]
    return lines


def _efficiency_section(section: dict, results: dict) -> list[str]:
    s = section["settings"]
    lines = [
        f"Linear head on cached features, trained on a seeded random subset ({len(s['seeds'])} seeds: "
        f"{s['seeds']}); every subset gets {s['optimizer_steps']} optimizer steps (Adam lr {s['lr']:g}, "
        f"batch {s['batch_size']}); accuracy on all {s['val_images']} validation images.",
        "",
        "| training images per class | training images | epochs | val acc (mean ± std) |",
        "|---|---|---|---|",
    ]
    for row in section["rows"]:
        lines.append(
            f"| {row['per_class']} | {row['train_images']} | {row['epochs']} "
            f"| {_acc(row['val_acc_mean'], row['val_acc_std'])} |"
        )
    ceiling, wrong = section["head_ceiling"], section["always_wrong"]
    lines += [
        "",
        f"Diagnosis: with all training images, {len(wrong)} validation images are misclassified by the "
        f"head of every seed ({', '.join(f'`{name}`' for name in wrong) or 'none'}). The best of "
        f"{ceiling['settings_tried']} head settings (lr, weight decay, epochs), picked on the validation "
        f"set itself and so optimistic, reaches {ceiling['val_acc']:.3f} (lr {ceiling['lr']:g}, weight "
        f"decay {ceiling['weight_decay']:g}, {ceiling['epochs']} epochs): an upper bound for a linear "
        "head on these features.",
    ]
    return lines


def _feature_extraction_note(results: dict) -> str | None:
    """Why feature extraction missed its target, from the numbers of sections 2 and 2c."""
    strategies = results["sections"].get("strategies")
    extraction = strategies and strategies["strategies"].get("feature_extraction")
    if not extraction or extraction["val_acc_mean"] >= FEATURE_EXTRACTION_TARGET:
        return None
    val_images = strategies["settings"]["val_images"]
    needed = math.ceil(FEATURE_EXTRACTION_TARGET * val_images)
    correct = extraction["val_acc_mean"] * val_images
    note = (
        f"feature extraction gets {correct:.1f} of {val_images} validation images right on average; "
        f"{FEATURE_EXTRACTION_TARGET} needs {needed}, so it misses by {needed - correct:.1f} image(s)."
    )
    efficiency = results["sections"].get("efficiency")
    if efficiency is not None:
        ceiling = efficiency["head_ceiling"]["val_acc"]
        backbone = strategies["machine"].get("backbone")
        if ceiling < FEATURE_EXTRACTION_TARGET:
            verdict = f"no head setting closes the gap: the limit is the features of `{backbone}`"
        else:
            verdict = (
                f"the features of `{backbone}` allow {FEATURE_EXTRACTION_TARGET} with a head tuned on the "
                "validation set itself, which an honest measurement cannot do; the course's head settings "
                "(those of notebook 04) fall short by the images above"
            )
        note += (
            f" The best of the head settings tried in section 2c, picked on the validation set, reaches "
            f"{ceiling:.3f}: {verdict}. {len(efficiency['always_wrong'])} validation images are wrong "
            "for every seed (listed in section 2c)."
        )
    return note


def _diagnosis_section(section: dict, results: dict) -> list[str]:
    s = section["settings"]
    intro = (
        f"`{section['strategy']}` again ({s['finetune_epochs']} epochs of fine-tuning at lr "
        f"{s['finetune_lr']:g} unless a row says otherwise, seeds {s['seeds']}), changing one thing "
        "at a time."
    )
    if section["strategy"] == "two_stage":
        intro += (
            " Two-stage starts fine-tuning from the trained linear head, so whatever it loses against "
            "feature extraction is lost by changing the backbone."
        )
    lines = [
        intro,
        "",
        "| variant | val acc (mean ± std) | wall time per run |",
        "|---|---|---|",
    ]
    for label, result in section["variants"].items():
        lines.append(
            f"| {label} | {_acc(result['val_acc_mean'], result['val_acc_std'])} "
            f"| {result['seconds_mean']:.0f} s |"
        )
    strategies = results["sections"].get("strategies")
    extraction = strategies and strategies["strategies"].get("feature_extraction")
    if extraction:
        best_label, best = max(section["variants"].items(), key=lambda item: item[1]["val_acc_mean"])
        lines += [
            "",
            f"Best variant: {best_label}, {best['val_acc_mean']:.3f}; feature extraction (section 2): "
            f"{extraction['val_acc_mean']:.3f}.",
        ]
    return lines


def _course_section(section: dict, results: dict) -> list[str]:
    lines = [
        f"Command: `{section['command']}`. Memory: {section['memory_method']}.",
        "",
        "| notebook | nbval | wall time | peak RSS (kernel) | peak RSS (pytest + kernel) |",
        "|---|---|---|---|---|",
    ]
    for row in section["notebooks"]:
        lines.append(
            f"| {row['notebook']} | {'passed' if row['passed'] else '**failed**'} | {row['seconds']:.0f} s "
            f"| {_bytes(row['peak_rss_bytes'])} | {_bytes(row['peak_tree_rss_bytes'])} |"
        )
    lines.append(
        f"| **total** | | **{section['total_seconds']:.0f} s** | {_bytes(section['peak_rss_bytes'])} | |"
    )
    missing = section.get("missing")
    if missing:
        lines += ["", f"Not measured (no solution notebook yet): {', '.join(missing)}."]
    return [*lines, "", *_targets_table(section["targets"])]


def _grading_section(section: dict, results: dict) -> list[str]:
    if section.get("not_measured"):
        return [f"Not measured: {section['not_measured']}"]
    lines = [
        f"Command: `{section['command']}`, the reference notebook handed in as the submission.",
        "",
        "| assignment | automatic points | points left to a human | wall time | peak RSS (kernel) |",
        "|---|---|---|---|---|",
    ]
    for row in section["assignments"]:
        if row["graded"]:
            points = f"{row['score']:g}/{row['max_score']:g} | {row['manual_points']:g}"
        else:
            points = "**autograde failed** | "
        lines.append(
            f"| {row['assignment']} | {points} | {row['seconds']:.1f} s | {_bytes(row['peak_rss_bytes'])} |"
        )
    lines.append(f"| **all** | | | **{section['total_seconds']:.1f} s** | |")
    rows = section["assignments"]
    if rows and section["total_seconds"] > GRADING_SECONDS_BUDGET:
        fastest = min(row["seconds"] for row in rows)
        lines += [
            "",
            f"Note: graded one after another, every notebook pays its own start-up (nbgrader, a fresh "
            f"kernel, importing torch, loading the backbone and the data in the setup cell); even the "
            f"fastest notebook took {fastest:.1f} s, so {len(rows)} notebooks in a row cannot take less than "
            f"about {len(rows) * fastest:.0f} s however little their test cells do.",
        ]
    cli = section.get("tlcourse")
    if cli:
        if cli["graded"]:
            lines += [
                "",
                f"`{cli['command']}` (the course's grading command: limits, re-check, feedback) graded the "
                f"same six notebooks as one learner's submission (by default shared among cores / jobs "
                f"nbgrader processes, here {section['machine']['cpu_cores']}) in "
                f"{cli['seconds_per_submission']:.1f} s "
                f"({cli['score']:g}/{cli['max_score']:g} points in grades.csv); the whole command took "
                f"{cli['seconds']:.1f} s, the rest being the one-off preparation of the course; peak RSS "
                f"{_bytes(cli['peak_rss_bytes'])}.",
            ]
        else:
            lines += ["", f"`{cli['command']}` failed: see `tlcourse.output_tail` in results.json."]
    group = section.get("tlcourse_class")
    if group:
        if group["graded"]:
            per_learner = ", ".join(f"{seconds:.1f}" for seconds in group["learner_seconds"])
            lines += [
                "",
                f"`{group['command']}` graded {group['learners']} copies of the same complete submission, "
                f"{group['jobs']} at a time, in {group['grading_seconds']:.1f} s of grading "
                f"({group['score']:g}/{group['max_score']:g} points; each learner took {per_learner} s "
                f"while sharing the CPU): {group['seconds_per_submission']:.1f} s per submission, the "
                f"figure that decides how long a class takes. Each graded kernel and re-check runs torch "
                f"with one thread per core left to it (`--threads`).",
            ]
        else:
            lines += ["", f"`{group['command']}` failed: see `tlcourse_class.output_tail` in results.json."]
    return [*lines, "", *_targets_table(section["targets"])]


RENDERERS = {
    "head": _head_section,
    "strategies": _strategies_section,
    "diagnosis": _diagnosis_section,
    "efficiency": _efficiency_section,
    "course": _course_section,
    "grading": _grading_section,
}


def render_markdown(results: dict) -> str:
    """The Markdown report: one table (and its targets) per measured section, in a fixed order."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`; `--only head,course` for a subset) from "
        "`results.json`; do not edit by hand. PASS/MISS compare with the targets of the issue; the "
        "targets are never adjusted to the results.",
        "",
        f"Peak memory on CPU: {results.get('cpu_memory_method', 'n/a')}. On CUDA: "
        "`torch.cuda.max_memory_allocated`.",
        "",
    ]
    for key, title in SECTION_TITLES.items():
        section = results["sections"].get(key)
        if section is None:
            continue
        lines += [
            f"## {title}",
            "",
            _machine_line(section["machine"]) + f" Run by `{section['run_by']}`.",
            "",
        ]
        lines += RENDERERS[key](section, results)
        for note in section.get("notes", []):
            lines += ["", f"Note: {note}"]
        lines.append("")
    lines.append(f"![benchmark plots]({PLOT_NAME})")
    return "\n".join(lines) + "\n"


def render_plot(results: dict, path: Path) -> bool:
    """Draw the measured sections side by side into ``path``; False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = results["sections"]
    panels = [key for key in ("head", "strategies", "efficiency", "course") if key in sections]
    if not panels:
        return False
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, key in zip(axes.flat, panels, strict=False):  # spare axes were hidden above
        section = sections[key]
        if key == "head":
            seconds = [section["textbook"]["seconds"], section["cached"]["seconds"]]
            bars = axis.bar(["textbook loop", "cached features"], seconds, color=["#999999", "#2a7ab0"])
            for bar, part in zip(bars, ("textbook", "cached"), strict=True):
                axis.annotate(
                    f"acc {section[part]['val_acc']:.3f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                )
            axis.set_ylabel("wall time (s)")
            axis.set_title(f"Head, {section['settings']['epochs']} epochs: {section['speedup']:.1f}x faster")
        elif key == "strategies":
            names = list(section["strategies"])
            means = [section["strategies"][n]["val_acc_mean"] for n in names]
            stds = [section["strategies"][n]["val_acc_std"] for n in names]
            axis.bar(range(len(names)), means, yerr=stds, capsize=4, color="#2a7ab0")
            axis.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
            axis.axhline(FEATURE_EXTRACTION_TARGET, color="#999999", linestyle="--", linewidth=1)
            axis.set_ylim(0.4, 1.02)
            axis.set_ylabel("val accuracy (mean ± std)")
            axis.set_title(f"Strategies ({len(section['settings']['seeds'])} seeds)")
        elif key == "efficiency":
            rows = section["rows"]
            sizes = [row["train_images"] for row in rows]
            means = [row["val_acc_mean"] for row in rows]
            stds = [row["val_acc_std"] for row in rows]
            axis.errorbar(sizes, means, yerr=stds, marker="o", capsize=4)
            axis.set_xscale("log")
            axis.set_xticks(sizes, [f"{row['per_class']}\n({row['train_images']})" for row in rows])
            axis.minorticks_off()
            axis.axhline(FEATURE_EXTRACTION_TARGET, color="#999999", linestyle="--", linewidth=1)
            axis.set_ylim(0.4, 1.02)
            axis.set_xlabel("training images per class (in all)")
            axis.set_ylabel("val accuracy (mean ± std)")
            axis.set_title("Feature extraction with less data")
        else:
            rows = section["notebooks"]
            axis.barh([row["notebook"] for row in rows], [row["seconds"] for row in rows], color="#2a7ab0")
            axis.invert_yaxis()
            axis.set_xlabel("seconds under nbval")
            axis.set_title(f"Course: {section['total_seconds']:.0f} s in total")
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        Path(temporary).unlink(missing_ok=True)
    return True


README_START = "<!-- benchmark-summary: start (written by python -m benchmarks from results.json) -->"
README_END = "<!-- benchmark-summary: end -->"


def render_summary(results: dict) -> str:
    """Every target of every measured section in one table, with where and when it was measured."""
    lines = ["| section | target | measured | result | measured on |", "|---|---|---|---|---|"]
    for key, title in SECTION_TITLES.items():
        section = results["sections"].get(key)
        if section is None:
            continue
        machine = section["machine"]
        device = machine["device_name"] if machine["device"] == "cuda" else f"{machine['cpu_cores']}-core CPU"
        where = f"{machine['date'][:10]}, {device}, `{machine.get('backbone', 'n/a')}`"
        for target in section.get("targets", []):
            short_title = title.split(" (")[0]
            lines.append(
                f"| {short_title} | {target['target']} | {target['measured']} | "
                f"{_verdict(target['passed'])} | {where} |"
            )
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, results: dict) -> bool:
    """Replace the summary between the README's markers; False when the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    new = f"{before}{README_START}\n\n{render_summary(results)}\n{README_END}{after}"
    if new != text:
        _atomic_write(readme, new.encode())
    return True


def write_results(results: dict, out_dir: Path, readme: Path | None = None) -> list[Path]:
    """Write results.json, results.md and the plot into ``out_dir`` (and the summary into ``readme``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "results.md"]
    text = json.dumps(results, indent=1) + "\n"
    # Render what the JSON holds (tuples become lists), so --render-only gives the same report.
    results = json.loads(text)
    _atomic_write(written[0], text.encode())
    _atomic_write(written[1], render_markdown(results).encode())
    if render_plot(results, out_dir / PLOT_NAME):
        written.append(out_dir / PLOT_NAME)
    if readme is not None and update_readme(readme, results):
        written.append(readme)
    return written

"""The report directory: report.json, a Rich summary on stderr, PNG figures and the LOSO logs in MEGC format.

Figures are drawn with matplotlib's Agg backend (no display needed on a cluster node).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recognition_eval.loso import FoldOutcome, sorted_folds  # noqa: E402
from recognition_eval.metrics import confusion, per_class_f1  # noqa: E402

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def write_megc_log(
    path: Path, rows: pd.DataFrame, labels: np.ndarray, prediction: np.ndarray, persons: np.ndarray
) -> None:
    """Per test person (fold), per subject of that person: a `db subject` header line, then `file gt pred`
    lines (class indices) — the MEGC format, in fold order.
    """
    lines: list[str] = []
    frame = rows.assign(_gt=labels, _pred=prediction, _person=np.asarray(persons))
    for person in sorted_folds(frame["_person"]):
        group = frame[frame["_person"] == person]
        for (dataset, subject), block in group.groupby(["dataset", "subject"], sort=False):
            lines.append(f"{dataset} {subject}")
            lines.extend(
                f"{clip} {gt} {pred}"
                for clip, gt, pred in zip(block["clip_id"], block["_gt"], block["_pred"], strict=True)
            )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def write_json_atomic(path: Path, document: dict) -> None:
    """report.json via temp + rename: a killed run leaves the previous report, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    tmp.replace(path)


TRAINING_SET_COLUMNS = (
    "arm", "seed", "fold", "n_train_real", "n_train_synthetic", "steps", "batch", "real_per_batch",
    "synthetic_per_batch", "final_loss", "synthetic_ids",
)  # fmt: skip


def write_training_sets(path: Path, outcomes: Sequence[FoldOutcome]) -> None:
    """One row per trained model: arm, seed, test person, real/synthetic counts, budget, final loss and the
    synthetic clips it could draw from ("store#index", ";"-joined) — the audit trail of the leakage guard.
    """
    frame = pd.DataFrame(
        [
            {
                "arm": o.arm,
                "seed": o.seed,
                "fold": o.fold,
                "n_train_real": o.n_train_real,
                "n_train_synthetic": o.n_train_synthetic,
                "steps": o.steps,
                "batch": o.batch,
                "real_per_batch": o.real_per_batch,
                "synthetic_per_batch": o.synthetic_per_batch,
                "final_loss": round(o.final_loss, 6),
                "synthetic_ids": ";".join(o.synthetic_ids),
            }
            for o in outcomes
        ],
        columns=list(TRAINING_SET_COLUMNS),
    )
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def _save(figure: plt.Figure, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)


def plot_confusions(
    path: Path, labels: np.ndarray, predictions: dict[str, np.ndarray], classes: Sequence[str]
) -> None:
    """Row-normalised confusion matrices, one per arm, counts (summed over seeds) in each cell."""
    variants = list(predictions)
    figure, axes = plt.subplots(1, len(variants), figsize=(4.8 * len(variants), 4.2), squeeze=False)
    for axis, variant in zip(axes[0], variants, strict=True):
        counts = sum(confusion(labels, p, len(classes)) for p in predictions[variant])
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(classes)):
            for j in range(len(classes)):
                colour = "white" if share[i, j] > 0.6 else "black"
                axis.text(
                    j,
                    i,
                    f"{counts[i, j]}\n{share[i, j]:.0%}",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=9,
                )
        axis.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        axis.set_yticks(range(len(classes)), classes)
        axis.set_xlabel("predicted")
        axis.set_title(variant)
    axes[0][0].set_ylabel("ground truth")
    figure.subplots_adjust(wspace=0.35)
    figure.suptitle("Pooled LOSO confusion (rows sum to 100 %)")
    _save(figure, path)


def plot_class_f1(
    path: Path, labels: np.ndarray, predictions: dict[str, np.ndarray], classes: Sequence[str]
) -> None:
    """Per-class F1 (pooled, mean over seeds), one bar per arm."""
    variants = list(predictions)
    width = 0.8 / len(variants)
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(classes), 3.6))
    for k, variant in enumerate(variants):
        scores = np.mean([per_class_f1(labels, p, len(classes)) for p in predictions[variant]], axis=0)
        positions = np.arange(len(classes)) + (k - (len(variants) - 1) / 2) * width
        bars = axis.bar(positions, scores, width, label=variant, color=_colour(k))
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_xticks(range(len(classes)), classes)
    axis.set_ylim(0, 1.08)
    axis.set_ylabel("F1")
    axis.set_title("Per-class F1 over all folds")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _save(figure, path)


def plot_fold_gain(path: Path, per_fold: Sequence[dict], arm: str | None = None) -> None:
    """Per test person: accuracy gain of `arm` over the baseline (or baseline accuracy), test-set sizes."""
    folds = [entry["fold"] for entry in per_fold]
    key = f"{arm}_accuracy"
    compare = arm is not None and all(key in entry for entry in per_fold)
    figure, axis = plt.subplots(figsize=(max(5.0, 0.45 * len(folds) + 1.5), 3.6))
    if compare:
        values = [entry[key] - entry["baseline_accuracy"] for entry in per_fold]
        colours = ["#55a868" if v >= 0 else "#c44e52" for v in values]
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_ylabel(f"accuracy gain ({arm} − baseline)")
        axis.set_title("Per-person gain (first seed); label = test clips / synthetic clips")
        notes = [f"{e['n_test']}/{e.get('n_synthetic', 0)}" for e in per_fold]
    else:
        values = [entry["baseline_accuracy"] for entry in per_fold]
        colours = [_colour(0)] * len(values)
        axis.set_ylim(0, 1.1)
        axis.set_ylabel("accuracy")
        axis.set_title("Per-person baseline accuracy (first seed); label = test clips")
        notes = [str(e["n_test"]) for e in per_fold]
    bars = axis.bar(range(len(folds)), values, color=colours)
    axis.bar_label(bars, labels=notes, fontsize=7)
    axis.set_xticks(range(len(folds)), folds, rotation=60, ha="right", fontsize=8)
    _save(figure, path)


def synthetic_mode_note(report: dict) -> str:
    """One line saying what an arm's model saw next to the baseline's (add vs replace) and what p means."""
    budget = report.get("budget", {})
    mode, batch = budget.get("mode", "replace"), budget.get("batch")
    synthetic = budget.get("synthetic_per_batch")
    if mode == "add":
        seen = f"every model sees the baseline's real batches of {batch}; an arm adds {synthetic} synthetic"
    else:
        seen = f"an arm replaces {synthetic} of each batch of {batch} real clips with synthetic ones"
    return (
        f"synthetic mode {mode}: {seen} (same steps, seeds, schedule); p: permutation over persons, "
        "Holm-adjusted over the arms (raw p in report.json); n_syn = distinct clips over all folds "
        "(mean a model could draw)"
    )


def summary_table(report: dict) -> Table:
    """One row per arm: UF1, UAR, gain with its persons × seeds CI, p-value, budget, synthetic clips."""
    table = Table(
        title=f"Leave-one-person-out {report['recognizer']} · {report['protocol']} · {report['n_folds']} "
        f"persons · {report['n_samples']} clips · {report['n_seeds']} seeds · CI over {report['resampled']}"
    )
    for column in ("arm", "UF1", "UAR", "gain UF1 [95% CI]", "p Holm", "gain UAR [95% CI]", "steps",
                   "real:syn", "n_syn (per model)", "final loss"):  # fmt: skip
        table.add_column(column, justify="left" if column == "arm" else "right")
    for name, arm in report.get("arms", {}).items():
        baseline = name == "baseline"
        table.add_row(
            name + (" †" if arm.get("domain_mismatch") else ""),
            f"{arm['uf1']:.3f}",
            f"{arm['uar']:.3f}",
            "" if baseline else f"{arm['gain_uf1']:+.3f} [{arm['ci_uf1'][0]:+.3f}, {arm['ci_uf1'][1]:+.3f}]",
            "" if baseline else f"{arm.get('p_uf1_holm', arm['p_uf1']):.3f}",
            "" if baseline else f"{arm['gain_uar']:+.3f} [{arm['ci_uar'][0]:+.3f}, {arm['ci_uar'][1]:+.3f}]",
            str(arm["steps"]),
            arm["ratio"].split()[-1],
            "" if baseline else f"{arm['n_synthetic']} ({arm.get('n_synthetic_per_fold', 0):.0f})",
            f"{arm['final_loss']:.3f}",
        )
    notes = [synthetic_mode_note(report)]
    mismatched = report.get("domain", {}).get("mismatched_arms") or []
    if mismatched:
        notes.append(
            f"† stores made at another size than the evaluation's {report['domain']['crop_size']}² crop "
            f"({', '.join(mismatched)}): their clips reach the recognizer resized, unlike the real ones"
        )
    features = report.get("features", {})
    if report.get("n_unlabelled_dropped"):
        notes.append(f"{report['n_unlabelled_dropped']} manifest rows without a class dropped")
    if features.get("apex_estimated"):
        notes.append(f"{features['apex_estimated']} clips with an estimated (middle-frame) apex")
    if features.get("failed"):
        notes.append(f"{len(features['failed'])} clips left out (no face / no frames, see report.json)")
    for name, scores in report.get("per_dataset", {}).items():
        if len(report.get("per_dataset", {})) > 1:
            parts = ", ".join(f"{arm} {value['uf1']:.3f}" for arm, value in scores.items())
            notes.append(f"{name} (n={scores['baseline']['n']}) UF1: {parts}")
    for name, arm in report.get("arms", {}).items():
        counts = arm.get("synthetic")
        if counts:
            notes.append(
                f"{name}: {counts.get('kept', 0)} of {counts.get('done', 0)} synthetic clips kept "
                f"({counts.get('source_excluded', 0)} sources excluded by the protocol, "
                f"{counts.get('quality', 0)} below the quality bar); "
                f"{len(arm.get('folds_without_synthetic', []))} persons without synthetic clips"
            )
    if "test" in report:
        notes.append(f"CI: {report['test']['bootstrap']}; p: {report['test']['permutation']}")
    table.caption = "\n".join(notes) or None
    return table


def write_report(
    out: Path,
    report: dict,
    rows: pd.DataFrame,
    labels: np.ndarray,
    classes: Sequence[str],
    persons: np.ndarray,
    predictions: dict[str, np.ndarray],
    outcomes: Sequence[FoldOutcome] = (),
    console: Console | None = None,
    print_table: bool = True,
) -> None:
    """Everything a reader of the run needs, in `out`; the table goes to stderr."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = report["seeds"]
    logs = []
    for variant, per_seed in predictions.items():
        for seed, prediction in zip(seeds, per_seed, strict=True):
            name = f"loso_{variant}_seed{seed}.log"
            write_megc_log(out / name, rows, labels, prediction, persons)
            logs.append(name)
    plot_confusions(out / "confusion.png", labels, predictions, classes)
    plot_class_f1(out / "per_class_f1.png", labels, predictions, classes)
    arms = [name for name in report.get("arms", {}) if name != "baseline"]
    plot_fold_gain(
        out / "per_fold.png",
        report["per_fold"],
        "augmented" if "augmented" in arms else next(iter(arms), None),
    )
    write_training_sets(out / "training_sets.csv", outcomes)
    report["files"] = {
        "logs": logs,
        "figures": ["confusion.png", "per_class_f1.png", "per_fold.png"],
        "training_sets": "training_sets.csv",
        "html": "report.html",
    }
    write_json_atomic(out / "report.json", report)
    from recognition_eval.html_report import write_html_report  # report.html: the same run, one page

    write_html_report(out, report, labels, classes, persons, predictions)
    if not print_table:
        return
    if console is None:
        console = Console(stderr=True)
        if not console.is_terminal:
            console = Console(stderr=True, width=160)  # a log file: room for every column
    console.print(summary_table(report))

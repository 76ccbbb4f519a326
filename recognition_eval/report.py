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

VARIANT_COLOURS = {"baseline": "#4c72b0", "augmented": "#dd8452"}


def write_megc_log(path: Path, rows: pd.DataFrame, labels: np.ndarray, prediction: np.ndarray) -> None:
    """One block per LOSO fold: a `db subject` header line, then `file gt pred` lines (class indices)."""
    lines: list[str] = []
    frame = rows.assign(
        _gt=labels, _pred=prediction, _fold=rows["dataset"].astype(str) + "/" + rows["subject"]
    )
    for fold in sorted_folds(frame["_fold"]):
        group = frame[frame["_fold"] == fold]
        dataset, subject = fold.split("/", 1)
        lines.append(f"{dataset} {subject}")
        lines.extend(
            f"{clip} {gt} {pred}"
            for clip, gt, pred in zip(group["clip_id"], group["_gt"], group["_pred"], strict=True)
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def write_json_atomic(path: Path, document: dict) -> None:
    """report.json via temp + rename: a killed run leaves the previous report, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    tmp.replace(path)


def write_training_sets(path: Path, outcomes: Sequence[FoldOutcome]) -> None:
    """One row per trained model: variant, seed, test fold, real/synthetic counts and the synthetic clips it
    actually trained on ("store#index", ";"-joined) — the audit trail of the leakage guard.
    """
    frame = pd.DataFrame(
        [
            {
                "variant": o.variant,
                "seed": o.seed,
                "fold": o.fold,
                "n_train_real": o.n_train_real,
                "n_train_synthetic": o.n_train_synthetic,
                "synthetic_ids": ";".join(o.synthetic_ids),
            }
            for o in outcomes
        ],
        columns=["variant", "seed", "fold", "n_train_real", "n_train_synthetic", "synthetic_ids"],
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
    """Row-normalised confusion matrices side by side, counts (summed over seeds) in each cell."""
    variants = [v for v in ("baseline", "augmented") if v in predictions]
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
    """Per-class F1 (pooled, mean over seeds), one bar per variant."""
    variants = [v for v in ("baseline", "augmented") if v in predictions]
    width = 0.8 / len(variants)
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(classes), 3.6))
    for k, variant in enumerate(variants):
        scores = np.mean([per_class_f1(labels, p, len(classes)) for p in predictions[variant]], axis=0)
        positions = np.arange(len(classes)) + (k - (len(variants) - 1) / 2) * width
        bars = axis.bar(positions, scores, width, label=variant, color=VARIANT_COLOURS[variant])
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_xticks(range(len(classes)), classes)
    axis.set_ylim(0, 1.08)
    axis.set_ylabel("F1")
    axis.set_title("Per-class F1 over all folds")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _save(figure, path)


def plot_fold_gain(path: Path, per_fold: Sequence[dict]) -> None:
    """Per test subject: accuracy gain (augmented − baseline) or baseline accuracy, with test-set sizes."""
    folds = [entry["fold"] for entry in per_fold]
    augmented = all("augmented_accuracy" in entry for entry in per_fold)
    figure, axis = plt.subplots(figsize=(max(5.0, 0.45 * len(folds) + 1.5), 3.6))
    if augmented:
        values = [entry["augmented_accuracy"] - entry["baseline_accuracy"] for entry in per_fold]
        colours = ["#55a868" if v >= 0 else "#c44e52" for v in values]
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_ylabel("accuracy gain (aug − base)")
        axis.set_title("Per-fold gain (first seed); label = test clips / synthetic clips used")
        notes = [f"{e['n_test']}/{e.get('n_synthetic', 0)}" for e in per_fold]
    else:
        values = [entry["baseline_accuracy"] for entry in per_fold]
        colours = [VARIANT_COLOURS["baseline"]] * len(values)
        axis.set_ylim(0, 1.1)
        axis.set_ylabel("accuracy")
        axis.set_title("Per-fold baseline accuracy (first seed); label = test clips")
        notes = [str(e["n_test"]) for e in per_fold]
    bars = axis.bar(range(len(folds)), values, color=colours)
    axis.bar_label(bars, labels=notes, fontsize=7)
    axis.set_xticks(range(len(folds)), folds, rotation=60, ha="right", fontsize=8)
    _save(figure, path)


def summary_table(report: dict) -> Table:
    """The headline numbers as a Rich table."""
    table = Table(
        title=f"LOSO {report['recognizer']} · {report['protocol']} · {report['n_folds']} folds · "
        f"{report['n_samples']} clips · seeds {report['seeds']}"
    )
    table.add_column("subset")
    variants = [v for v in ("baseline", "augmented") if v in report]
    for variant in variants:
        table.add_column(f"{variant} UF1", justify="right")
        table.add_column(f"{variant} UAR", justify="right")
    table.add_row("all", *[f"{report[v][m]:.3f}" for v in variants for m in ("uf1", "uar")])
    for name, scores in report.get("per_dataset", {}).items():
        table.add_row(
            f"{name} (n={scores['baseline']['n']})",
            *[f"{scores[v][m]:.3f}" for v in variants for m in ("uf1", "uar")],
        )
    notes = []
    features = report.get("features", {})
    if report.get("n_unlabelled_dropped"):
        notes.append(f"{report['n_unlabelled_dropped']} manifest rows without a class dropped")
    if features.get("apex_estimated"):
        notes.append(f"{features['apex_estimated']} clips with an estimated (middle-frame) apex")
    if features.get("failed"):
        notes.append(f"{len(features['failed'])} clips left out (no face / no frames, see report.json)")
    if "gain_uf1" in report:
        lo, hi = report["ci_uf1"]
        lo2, hi2 = report["ci_uar"]
        notes.append(
            f"gain UF1 {report['gain_uf1']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}] · "
            f"gain UAR {report['gain_uar']:+.3f} [{lo2:+.3f}, {hi2:+.3f}] · "
            f"synthetic samples summed over folds {report['n_synthetic_used']}"
        )
    table.caption = "\n".join(notes) or None
    return table


def write_report(
    out: Path,
    report: dict,
    rows: pd.DataFrame,
    labels: np.ndarray,
    classes: Sequence[str],
    folds_of_rows: np.ndarray,
    predictions: dict[str, np.ndarray],
    outcomes: Sequence[FoldOutcome] = (),
    console: Console | None = None,
) -> None:
    """Everything a reader of the run needs, in `out`; the table goes to stderr."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = report["seeds"]
    logs = []
    for variant, per_seed in predictions.items():
        for seed, prediction in zip(seeds, per_seed, strict=True):
            name = f"loso_{variant}_seed{seed}.log"
            write_megc_log(out / name, rows, labels, prediction)
            logs.append(name)
    plot_confusions(out / "confusion.png", labels, predictions, classes)
    plot_class_f1(out / "per_class_f1.png", labels, predictions, classes)
    plot_fold_gain(out / "per_fold.png", report["per_fold"])
    write_training_sets(out / "training_sets.csv", outcomes)
    report["files"] = {
        "logs": logs,
        "figures": ["confusion.png", "per_class_f1.png", "per_fold.png"],
        "training_sets": "training_sets.csv",
    }
    write_json_atomic(out / "report.json", report)
    (console or Console(stderr=True)).print(summary_table(report))

"""Leave-one-person-out training cost: every model of an evaluation as one batched model vs one at a time.

Builds a demo-sized problem (persons × seeds × arms models, flow-like maps whose class sets a local motion),
trains the same models both ways with recognition_eval.loso.train_models (same initial weights, same batches)
and prints one JSON line: seconds per path, the ratio, and whether predictions and final losses agree.

    .venv/bin/python benchmarks/loso_throughput.py --recognizer ststnet --persons 9 --seeds 3 --arms 7
    .venv/bin/python benchmarks/loso_throughput.py --recognizer resnet --device cuda   # on a GPU

On CPUs vmap turns each convolution into a grouped one, which oneDNN runs slower than separate small ones, so
`evaluate` batches only on CUDA by default; the numbers of both are in recognition_eval/README.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from recognition_eval.loso import ModelTask, budget_for, sorted_folds, train_models
from recognition_eval.models import recognizer_spec


def problem(
    persons: int, clips: int, channels: int, size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(persons·clips, C, S, S) maps and labels; class = sign of a horizontal motion blob, plus noise."""
    rng = np.random.default_rng(seed)
    n = persons * clips
    labels = np.arange(n) % 3
    x = rng.normal(0, 0.5, (n, channels, size, size)).astype(np.float32)
    lo, hi = size // 3, 2 * size // 3
    x[:, 0, lo:hi, lo:hi] += (labels - 1)[:, None, None] * 0.8
    return x, labels


def tasks_for(folds: np.ndarray, seeds: int, arms: int, n_synthetic: int) -> list[ModelTask]:
    """baseline + (arms − 1) synthetic arms, every seed and person (the demo's shape)."""
    tasks = []
    for arm in range(arms):
        for seed in range(seeds):
            for fold in sorted_folds(folds):
                train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
                if arm == 0:
                    tasks.append(ModelTask("baseline", seed, fold, train, test))
                    continue
                rows = np.arange(n_synthetic)
                tasks.append(ModelTask(f"arm{arm}", seed, fold, train, test, rows, (rows + arm) % 3))
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recognizer", default="ststnet")
    parser.add_argument("--persons", type=int, default=9)
    parser.add_argument("--clips", type=int, default=8, help="clips per person")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", type=int, default=7, help="arms including the baseline")
    parser.add_argument("--epochs", type=int, default=None, help="default: the configured schedule")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=64, help="models per batched group")
    arguments = parser.parse_args()

    spec = recognizer_spec(arguments.recognizer, epochs=arguments.epochs, input_size=arguments.input_size)
    x, y = problem(arguments.persons, arguments.clips, len(spec.channels), spec.input_size)
    folds = np.repeat(np.arange(arguments.persons), arguments.clips).astype(str)
    synthetic_x, _ = problem(arguments.persons, arguments.clips, len(spec.channels), spec.input_size, seed=1)
    tasks = tasks_for(folds, arguments.seeds, arguments.arms, len(synthetic_x))
    budget = budget_for(spec, [len(x) - arguments.clips], synthetic_share=0.5)
    common = dict(spec=spec, real_x=x, real_y=y, synthetic_x=synthetic_x, budget=budget, n_classes=3,
                  device=arguments.device, torch_threads=arguments.threads)  # fmt: skip

    def run(batched: bool) -> tuple[list, float]:
        started = time.perf_counter()
        outcomes = []
        size = arguments.group_size if batched else len(tasks)
        for k in range(0, len(tasks), size):
            outcomes += train_models(tasks=tasks[k : k + size], batched=batched, **common)
        if arguments.device.startswith("cuda"):
            torch.cuda.synchronize()
        return outcomes, time.perf_counter() - started

    batched, batched_s = run(True)
    loop, loop_s = run(False)
    agree = np.mean([np.mean(a.predictions == b.predictions) for a, b in zip(batched, loop, strict=True)])
    loss_gap = max(abs(a.final_loss - b.final_loss) for a, b in zip(batched, loop, strict=True))
    accuracy = np.mean([np.mean(o.predictions == y[o.test_rows]) for o in loop])
    print(
        json.dumps(
            {
                "recognizer": spec.name,
                "input_size": spec.input_size,
                "device": arguments.device,
                "threads": arguments.threads,
                "models": len(tasks),
                "steps": budget.steps,
                "batch": budget.batch,
                "batched_s": round(batched_s, 2),
                "loop_s": round(loop_s, 2),
                "loop_over_batched": round(loop_s / batched_s, 3),
                "model_steps_per_s_batched": round(len(tasks) * budget.steps / batched_s, 1),
                "model_steps_per_s_loop": round(len(tasks) * budget.steps / loop_s, 1),
                "prediction_agreement": round(float(agree), 4),
                "max_final_loss_gap": float(loss_gap),
                "accuracy": round(float(accuracy), 3),
            }
        )
    )


if __name__ == "__main__":
    main()

"""The learning curve of self-training: validation accuracy against the share of labels kept,
for the model alone, the model after self-training, and the TF-IDF baseline.

Reads the artifacts folders of runs made with the pipeline itself, one per label fraction:

    python -m pipeline run --source ../shared/data/nsmc_reviews_200k.txt --label-fraction 0.01 \
        --data-dir /tmp/st/data --artifacts-dir /tmp/st/self --self-train-rounds 1
    python benchmarks/self_training_curve.py --runs 0.01=/tmp/st/self --output curve.png

Each folder's train record holds the teacher's (the model alone's) and the winner's calibrated
validation accuracy; its baseline.json the TF-IDF baseline's. `--compare` adds the students of
other runs as a series of their own (e.g. runs with `--set self_train_baseline=false`, whose
students the model alone taught). Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.files import atomic_path
from pipeline.records import read_json, read_record


def point(fraction: float, folder: Path) -> dict:
    """The three validation accuracies of one self-training run's artifacts folder."""
    result = read_record(folder, "train")["result"]["self_training"]
    rounds = read_json(folder / "self_training.json")["rounds"]
    return {
        "label_fraction": fraction,
        "model_alone": result["teacher_val_accuracy"],
        "student": max(s["val_accuracy"] for r in rounds for s in r["students"]),
        "saved": result["final_val_accuracy"],
        "baseline": read_json(folder / "baseline.json")["val"]["accuracy"],
        "pseudo_labelled": result["pseudo_labelled"],
    }


def read_points(runs: list[str]) -> list[dict]:
    points = []
    for run in runs:
        fraction, _, folder = run.partition("=")
        points.append(point(float(fraction), Path(folder)))
        print(json.dumps(points[-1]))
    return sorted(points, key=lambda p: p["label_fraction"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="FRACTION=FOLDER")
    parser.add_argument("--compare", nargs="*", default=[], metavar="FRACTION=FOLDER")
    parser.add_argument("--compare-label", default="student taught by the model alone")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    points, compared = read_points(args.runs), read_points(args.compare)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))

    def plot(series: list[dict], key: str, name: str, style: str = "o-") -> None:
        x = [100 * p["label_fraction"] for p in series]
        ax.plot(x, [p[key] for p in series], style, label=name)

    plot(points, "model_alone", "the model on the labels alone")
    plot(points, "student", "its student, taught by the model + baseline mix")
    if compared:
        plot(compared, "student", args.compare_label, "o--")
    plot(points, "baseline", "TF-IDF + logistic regression")
    ax.set_xscale("log")
    ax.set_xticks([100 * p["label_fraction"] for p in points])
    ax.set_xticklabels([f"{100 * p['label_fraction']:g}%" for p in points])
    ax.set_xlabel("labels kept (% of the training split)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"self-training on the stand-in, {len(points)} label fraction(s), one seed")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(args.output) as tmp:
        fig.savefig(tmp, dpi=100)


if __name__ == "__main__":
    main()

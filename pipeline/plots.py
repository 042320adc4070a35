"""The stages' figures: training curves (train, pretrain), the confusion matrix and the
reliability diagram (evaluate), each written atomically as a PNG."""

from __future__ import annotations

from pathlib import Path

from pipeline.files import atomic_path


def _pyplot():
    """matplotlib's pyplot on the Agg backend: no display is needed or opened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write the figure to `path` through a temporary name, then free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)


def plot_curves(history: dict[str, list[float]], path: Path, loss_title: str = "loss") -> None:
    """Loss and accuracy per epoch, training against validation."""
    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], "o-", label="train")
        ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(loss_title if metric == "loss" else metric)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(matrix: list[list[int]], path: Path) -> None:
    """The test confusion matrix, each cell's count written in it."""
    fig, ax = _pyplot().subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    names = ["negative", "positive"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(map(max, matrix))
    for i in range(2):
        for j in range(2):
            color = "white" if matrix[i][j] > peak / 2 else "black"
            ax.text(j, i, f"{matrix[i][j]:,}", ha="center", va="center", color=color)
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    _save(fig, path)


def plot_reliability(result: dict, path: Path, bins: int) -> None:
    """The reliability diagram: each confidence bin's accuracy against its mean confidence, above
    how many reviews each bin holds (`result` is evaluate's, with `bins` equal-width bins)."""
    rows = result["reliability"]
    fig, (top, bottom) = _pyplot().subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    top.plot(
        [b["confidence"] for b in rows],
        [b["accuracy"] for b in rows],
        "o-",
        label=f"model (ECE {result['ece']:.4f})",
    )
    top.set_ylabel("accuracy")
    top.set_title(f"reliability on the test split ({bins} bins)")
    top.legend(loc="upper left")
    bottom.bar([b["bin"][0] for b in rows], [b["rows"] for b in rows], width=1 / bins, align="edge")
    bottom.set_xlabel("confidence: the probability of the label given")
    bottom.set_ylabel("reviews")
    bottom.set_xlim(0.5, 1)
    top.set_ylim(0.45, 1.02)
    fig.tight_layout()
    _save(fig, path)

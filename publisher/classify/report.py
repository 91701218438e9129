"""The chart of a head's report: a PNG people can look at (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any


def chart_png(report: dict[str, Any]) -> bytes:
    """A PNG with the blocked confusion matrix, per-class F1 (random vs blocked) and the
    learning curve (classification), or scores and the learning curve (regression)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    cv = report["cross_validation"]
    classification = report["task"] == "classification"
    fig = Figure(figsize=(15, 4.8), dpi=90)
    axes = fig.subplots(1, 3)
    title = f"{report['name']} ({report['kind']}, {report['collection']} {report['year']})"
    if classification:
        fig.suptitle(
            f"{title}: accuracy {cv['blocked']['accuracy']:.3f} blocked, "
            f"{cv['random']['accuracy']:.3f} random"
        )
        _confusion(axes[0], cv["blocked"]["confusion_matrix"])
        _per_class(axes[1], cv)
    else:
        fig.suptitle(
            f"{title}: R² {cv['blocked']['r2']:.3f} blocked, {cv['random']['r2']:.3f} random"
        )
        _regression_scores(axes[0], cv)
        axes[1].axis("off")
        axes[1].text(
            0.0,
            0.5,
            "\n".join(
                f"{split}: RMSE {cv[split]['rmse']:.3g}, MAE {cv[split]['mae']:.3g}"
                for split in ("random", "blocked")
            ),
            fontsize=11,
        )
    _curve(axes[2], report["learning_curve"], classification)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _confusion(ax: Any, cm: dict[str, Any]) -> None:
    import numpy as np

    matrix = np.asarray(cm["matrix"], dtype=float)
    names = cm["labels"]
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (spatially blocked CV)")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )


def _per_class(ax: Any, cv: dict[str, Any]) -> None:
    import numpy as np

    names = [row["name"] for row in cv["blocked"]["per_class"]]
    pos = np.arange(len(names))
    for offset, split in ((-0.2, "random"), (0.2, "blocked")):
        ax.bar(pos + offset, [row["f1"] for row in cv[split]["per_class"]], 0.4, label=split)
    ax.set_xticks(pos, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("per-class F1: random vs blocked CV")
    ax.legend(loc="lower right")


def _regression_scores(ax: Any, cv: dict[str, Any]) -> None:
    ax.bar(["random", "blocked"], [cv["random"]["r2"], cv["blocked"]["r2"]])
    ax.set_ylabel("R²")
    ax.set_title("R²: random vs blocked CV")


def _curve(ax: Any, curve: list[dict[str, Any]], classification: bool) -> None:
    key = "labels_per_class" if classification else "labels"
    xs = [p[key] for p in curve]
    ys = [p["score"] for p in curve]
    err = [p["score_std"] for p in curve]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3)
    if xs and max(xs) > 10 * max(min(xs), 1):
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("labels per class" if classification else "labels")
    ax.set_ylabel("accuracy" if classification else "R²")
    ax.set_title("learning curve (blocked CV)")
    ax.grid(alpha=0.3)

"""Training curves as in the paper's Fig. 2: loss and Dice per epoch, written to a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_history(history: Sequence[Mapping[str, float]], path: Path | str, title: str = "dicom-node training") -> Path:
    """Two panels: training loss (and validation loss when present), training and validation Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    epochs = [int(h["epoch"]) for h in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    if any("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h.get("val_loss", float("nan")) for h in history], "s--", label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (BCE + soft Dice)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_dice.plot(epochs, [h["dice"] for h in history], "o-", label="train Dice (augmented)")
    if any("val_dice" in h for h in history):
        ax_dice.plot(epochs, [h.get("val_dice", float("nan")) for h in history], "s--", label="validation Dice")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice vs reference mask")
    ax_dice.set_ylim(0, 1)
    ax_dice.grid(alpha=0.3)
    ax_dice.legend(loc="lower right")
    fig.suptitle(title)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target

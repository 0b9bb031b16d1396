"""The training loop: augmented slices from all orientations, BCE + soft Dice, AdamW, cosine LR.

:func:`train` fits a DeepLabv3+ to :class:`~dicom_node.training.data.Case` objects. An epoch is
``samples_per_epoch`` freshly augmented slices (cases drawn evenly, then an orientation, then a
slice). After each epoch the fixed validation slices (unaugmented, preprocessed as at inference)
are scored, and a resumable checkpoint (network, optimiser, step, history) is written beside the
output when one is given. ``init`` fine-tunes from a parent weights file (its architecture is kept).
With ``ema_decay`` the loop also keeps an exponential moving average of the weights (and of the
batch-norm statistics), written beside the output as ``NAME-ema.pt``: a second network from the
same run, so the two can be compared without a second run's noise.

On a GPU (``device``: ``auto`` picks CUDA when torch sees one) the network, the batches and the
validation run there; the augmentation stays on the CPU, where it costs about 25 ms per batch of 16.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import brain_logit, build_network, load_weights, resolve_device, save_weights
from dicom_node.receive.storage import atomic_file
from dicom_node.training.augment import AugmentConfig, augment
from dicom_node.training.data import ORIENTATIONS, Case, SliceSet, case_slices
from dicom_node.training.metrics import batch_dice

CHECKPOINT_FORMAT = "dicom-node-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 14
    samples_per_epoch: int = 1600
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    p_empty: float = 0.2  # slices of a head with no brain in them (neck, skull edge, outside)
    p_negative: float = 0.06  # slices of negative cases (phantoms), when given
    dice_weight: float = 1.0
    p_no_context: float = 0.1  # a network with neighbour channels sees the slice alone (as in a time series)
    ema_decay: float = 0.0  # > 0: also keep a moving average of the weights (TrainResult.ema_network)
    bf16: bool = False  # the forward pass in bfloat16 autocast (weights, loss and optimiser stay float32)
    val_slices_per_case: int = 36
    seed: int = 0
    threads: int = 2
    device: str = "auto"  # cpu, cuda or auto (CUDA when present)
    max_seconds: float | None = None  # wall-clock budget: the LR schedule follows it, training stops at it
    arch: ArchSpec = field(default_factory=ArchSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)  # written with the weights; a fine-tune keeps its parent's
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainResult:
    network: nn.Module
    arch: ArchSpec
    history: list[dict[str, float]]
    seconds: float
    ema_network: nn.Module | None = None  # the weights' moving average, when config.ema_decay


class SlicePool:
    """All slices of the training cases, with the sampling the trainer uses."""

    def __init__(self, cases: Sequence[Case], size: int, axes: Sequence[int] = ORIENTATIONS, channels: int = 1, context_mm: float = 0.0) -> None:
        self.channels, self.context_mm = channels, context_mm
        self.heads: list[list[SliceSet]] = []
        self.negatives: list[SliceSet] = []
        weights = []
        for case in cases:
            sets = case_slices(case, size, axes)
            if case.negative:
                self.negatives.extend(sets)
            else:
                self.heads.append(sets)
                weights.append(case.draw_weight)
        if not self.heads:
            raise ValueError("No training case with a brain mask was given.")
        # None when every head is drawn evenly: that draw keeps the random stream of recipes before 1.5.0
        self.head_p = None if all(w == 1.0 for w in weights) else np.array(weights) / sum(weights)

    def draw_head(self, rng: np.random.Generator) -> list[SliceSet]:
        """A head's slice sets, each head drawn in proportion to its case's ``draw_weight``."""
        if self.head_p is None:
            return self.heads[rng.integers(len(self.heads))]
        return self.heads[rng.choice(len(self.heads), p=self.head_p)]

    def sample(self, rng: np.random.Generator, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.negatives and rng.random() < config.p_negative:
            s = self.negatives[rng.integers(len(self.negatives))]
            j = int(rng.integers(len(s.images)))
        else:
            sets = self.draw_head(rng)
            s = sets[rng.integers(len(sets))]
            want_brain = rng.random() >= config.p_empty or not (~s.has_brain).any()
            choices = np.flatnonzero(s.has_brain if want_brain else ~s.has_brain)
            if choices.size == 0:
                choices = np.arange(len(s.images))
            j = int(choices[rng.integers(choices.size)])
        alone = self.channels > 1 and rng.random() < config.p_no_context
        return s.inputs(np.array([j]), self.channels, 0.0 if alone else self.context_mm)[0], s.masks[j], s.valid

    def batch(self, rng: np.random.Generator, config: TrainConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = [], []
        for _ in range(n):
            image, mask, valid = self.sample(rng, config)
            a, m = augment(image, mask, valid, rng, config.augment)
            images.append(a)
            masks.append(m)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def validation_slices(cases: Sequence[Case], size: int, per_case: int, channels: int = 1, context_mm: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, unaugmented set: slices evenly spread over each case's three orientations."""
    images, masks = [], []
    for case in cases:
        for s in case_slices(case, size):
            idx = np.flatnonzero(s.has_head) if s.has_head.any() else np.arange(len(s.images))
            take = idx[np.linspace(0, idx.size - 1, max(1, per_case // 3)).round().astype(int)]
            images.append(s.inputs(take, channels, context_mm))
            masks.append(s.masks[take])
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(masks)[:, None].astype(np.float32))


def loss_fn(logit: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus (1 - soft Dice) over the batch."""
    bce = F.binary_cross_entropy_with_logits(logit, target)
    if not dice_weight:
        return bce
    prob = torch.sigmoid(logit)
    inter = (prob * target).sum()
    dice = (2 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + dice_weight * (1 - dice)


@torch.no_grad()
def evaluate_slices(network: nn.Module, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 32) -> tuple[float, float]:
    """(loss, Dice) of ``network`` on prepared slices (on the network's device)."""
    network.eval()
    device = next(network.parameters()).device
    losses, preds = [], []
    for start in range(0, images.shape[0], batch_size):
        logit = brain_logit(network(images[start : start + batch_size].to(device)))
        losses.append(float(loss_fn(logit, masks[start : start + batch_size].to(device))) * logit.shape[0])
        preds.append((logit > 0).cpu().numpy())
    return sum(losses) / images.shape[0], batch_dice(np.concatenate(preds), masks.numpy() > 0.5)


def checkpoint_path(out: Path | str) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def ema_path(out: Path | str) -> Path:
    """Where the moving average of the weights trained into ``out`` is written."""
    out = Path(out)
    return out.with_name(f"{out.stem}-ema{out.suffix}")


def moving_average(network: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``network``'s weights and buffers, updated after each step.
    The first update copies; after n updates the decay is (1 + n) / (10 + n), capped at ``decay`` (as
    in timm's ModelEma), so the random initial weights are soon forgotten."""

    def blend(average: torch.Tensor, current: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
        if not average.is_floating_point():  # batch norm's batch count: the network's own
            return current
        d = torch.clamp(torch.as_tensor((1 + steps) / (10 + steps)), max=decay).to(average.dtype)
        return d * average + (1 - d) * current

    return torch.optim.swa_utils.AveragedModel(network, avg_fn=blend, use_buffers=True)


class _Schedule:
    """Linear warm-up, then cosine decay to 2 % over the steps, or over the time budget when that
    runs out first (progress is whichever is further along)."""

    def __init__(self, total: int, warmup: int, max_seconds: float | None, elapsed: float = 0.0) -> None:
        self.total, self.warmup, self.max_seconds = total, warmup, max_seconds
        self.started = time.perf_counter() - elapsed
        self.time_progress = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def progress(self, step: int) -> float:
        by_steps = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.max_seconds:
            self.time_progress = max(self.time_progress, self.elapsed() / self.max_seconds)
        return min(1.0, max(by_steps, self.time_progress))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * self.progress(step)))


def train(
    cases: Sequence[Case],
    config: TrainConfig = TrainConfig(),
    *,
    val_cases: Sequence[Case] | None = None,
    out: Path | str | None = None,
    init: Path | str | None = None,
    resume: bool = False,
    name: str = "dicom-node-brain",
    version: str = "0.0.0",
    card: dict[str, str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or fine-tune from ``init``, or resume from ``out``'s checkpoint); return the history.

    With ``out``, the final weights are written there (with the last epoch's metrics) and a
    checkpoint ``out.ckpt`` after every epoch; ``resume=True`` continues from that checkpoint.
    """
    threads_before = torch.get_num_threads()  # torch's thread count is process-wide: give it back
    torch.set_num_threads(config.threads)
    try:
        return _train(cases, config, val_cases, out, init, resume, name, version, card, progress, log)
    finally:
        torch.set_num_threads(threads_before)


def _train(
    cases: Sequence[Case],
    config: TrainConfig,
    val_cases: Sequence[Case] | None,
    out: Path | str | None,
    init: Path | str | None,
    resume: bool,
    name: str,
    version: str,
    card: dict[str, str] | None,
    progress: bool,
    log: Callable[[str], None],
) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if init:
        network, parent = load_weights(init, "cpu")
        arch = parent.arch
        config = replace(config, arch=arch, inference=parent.inference)
        log(f"Fine-tuning from {init} ({parent.name} {parent.version}).")
    else:
        arch = config.arch
        network = build_network(arch)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, config.samples_per_epoch // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    schedule = _Schedule(total_steps, min(config.warmup_steps, total_steps // 4 + 1), config.max_seconds)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = moving_average(network, config.ema_decay) if config.ema_decay else None
    history: list[dict[str, float]] = []
    start_epoch = 0
    done = False
    if resume and out and checkpoint_path(out).is_file():
        state = torch.load(checkpoint_path(out), map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{checkpoint_path(out)} is not a dicom-node training checkpoint.")
        network.load_state_dict(state["network"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"{checkpoint_path(out)} was trained without a moving average of its weights; it cannot resume with one.")
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [dict(h) for h in state["history"]]
        start_epoch = int(state["epoch"])
        done = bool(state.get("done", False))
        schedule.started = time.perf_counter() - float(state.get("elapsed", 0.0))
        log(f"Resuming from {checkpoint_path(out)} after epoch {start_epoch}.")
    pool = SlicePool(cases, arch.input_size, channels=arch.in_channels, context_mm=arch.context_mm)
    val_images, val_masks = validation_slices(val_cases if val_cases else cases, arch.input_size, config.val_slices_per_case, arch.in_channels, arch.context_mm)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    for epoch in range(start_epoch, config.epochs):
        if done:
            break
        rng = np.random.default_rng([config.seed, epoch])
        network.train()
        losses, tps, sums = [], 0.0, 0.0
        epoch_start = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress or tqdm is None, leave=False) if tqdm else range(steps_per_epoch)
        for _ in bar:
            images, masks = pool.batch(rng, config, config.batch_size)
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logit = brain_logit(network(images)).float()
            loss = loss_fn(logit, masks, config.dice_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(network)
            losses.append(float(loss.detach()))
            with torch.no_grad():
                pred = logit > 0
                tps += float((pred & (masks > 0.5)).sum())
                sums += float(pred.sum() + (masks > 0.5).sum())
            if tqdm and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if config.max_seconds and schedule.elapsed() >= config.max_seconds:
                done = True
                log(f"Time budget of {config.max_seconds:.0f} s reached in epoch {epoch + 1}.")
                break
        val_loss, val_dice = evaluate_slices(network, val_images, val_masks)
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "dice": 2 * tps / sums if sums else 1.0,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": float(scheduler.get_last_lr()[0]),
            "seconds": time.perf_counter() - epoch_start,
            "steps": len(losses),
        }
        history.append(row)
        log(f"epoch {row['epoch']}/{config.epochs}: loss {row['loss']:.4f} dice {row['dice']:.4f} val_loss {val_loss:.4f} val_dice {val_dice:.4f} ({row['seconds']:.0f} s)")
        if out:
            with atomic_file(checkpoint_path(out)) as fh:
                torch.save(
                    {"format": CHECKPOINT_FORMAT, "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch + 1, "arch": asdict(arch),
                     "done": done, "elapsed": schedule.elapsed(), **({"ema": ema.state_dict()} if ema is not None else {})},
                    fh,
                )
    network.eval()
    averaged = ema.module.eval() if ema is not None else None
    seconds = time.perf_counter() - started
    if out:
        last = history[-1] if history else {}
        metrics = {f"train_{k}": float(v) for k, v in last.items() if k in ("loss", "dice", "val_loss", "val_dice")}
        metrics["epochs"] = float(len(history))
        metrics["train_seconds"] = seconds
        save_weights(out, network, arch, name=name, version=version, metrics=metrics, card=card, inference=config.inference)
        if averaged is not None:
            val_loss, val_dice = evaluate_slices(averaged, val_images, val_masks)
            ema_metrics = {**metrics, "train_val_loss": val_loss, "train_val_dice": val_dice, "ema_decay": config.ema_decay}
            save_weights(ema_path(out), averaged, arch, name=name, version=version, metrics=ema_metrics, card=card, inference=config.inference)
    return TrainResult(network=network, arch=arch, history=history, seconds=seconds, ema_network=averaged)

"""A minimal fit loop for the tests' small weights: the same pre-processing as inference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dicom_node.imaging.loading import MRSeries
from dicom_node.imaging.normalize import Letterbox, intensity_window, normalize


def training_pairs(series: MRSeries, mask: np.ndarray, indices: Sequence[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs ``(n, 1, size, size)`` and bool targets for slices ``indices``, as inference sees them."""
    if mask.shape != series.pixels.shape:
        raise ValueError(f"mask shape {mask.shape} does not match series shape {series.pixels.shape}.")
    picks = list(indices)
    box = Letterbox.fit(series.matrix[0], series.matrix[1], size, series.slices[0].pixel_spacing)
    images = normalize(torch.from_numpy(series.pixels[picks].astype(np.float32)), intensity_window(series.pixels))
    targets = box.to_network(torch.from_numpy(mask[picks].astype(np.float32))) > 0.5
    return box.to_network(images), targets


def fit(network: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int, lr: float = 3e-3, batch_size: int = 4, seed: int = 0) -> list[float]:
    """Adam on binary cross-entropy of the brain logit for ``steps`` mini-batches; returns the losses."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    network.train()
    losses = []
    for _ in range(steps):
        pick = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=generator)
        logits = network(images[pick])
        logit = logits[:, :1] if logits.shape[1] == 1 else logits[:, 1:2] - logits[:, :1]
        loss = loss_fn(logit, targets[pick].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    network.eval()
    return losses

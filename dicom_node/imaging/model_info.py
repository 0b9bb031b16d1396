"""What identifies a model and rebuilds its network, without torch: outputs name the model they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A stack fuses its three views only when its reformats show a head: enough slices over enough of
# it. A 15-slice EPI slab of 75 mm gave reformats of a strip the network is unsure of (mean
# probability 0.88 fused against 0.93 in one view), so it keeps one view.
MIN_FUSED_SLICES = 16
MIN_FUSED_EXTENT_MM = 120.0


@dataclass(frozen=True)
class ArchSpec:
    """What is needed to rebuild the network and feed it: encoder, input size, channels.

    ``in_channels`` 1 shows the network one slice; 3 shows it the slice between its two
    neighbours ``context_mm`` away along the stack (``dicom_node.imaging.context``).
    """

    encoder_name: str = "tu-mobilenetv3_large_100"
    input_size: int = 160
    in_channels: int = 1
    classes: int = 1
    encoder_output_stride: int = 16
    decoder_channels: int = 128
    context_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"arch input_size must be a multiple of 16 and >= 32, not {self.input_size}.")
        if self.in_channels not in (1, 3):
            raise ValueError(f"arch in_channels must be 1 (a slice) or 3 (a slice and its two neighbours), not {self.in_channels}.")
        if (self.in_channels == 3) != (self.context_mm > 0) or not 0.0 <= self.context_mm <= 20.0:
            raise ValueError(f"arch context_mm must lie in (0, 20] with 3 input channels and be 0 with 1, not {self.context_mm} with {self.in_channels}.")
        if self.classes not in (1, 2):
            raise ValueError(f"arch classes must be 1 (brain logit) or 2 (background, brain), not {self.classes}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class InferenceSpec:
    """How the node turns the network's output into a mask; chosen and calibrated with the model.

    ``views`` 1 runs each slice of the series as acquired; 3 fuses the three orthogonal views of a
    series that is one regular volume (``dicom_node.imaging.triplanar``: a grid of ``grid_size``
    voxels along the longest side, at most the network's input size, every ``step``-th grid slice
    through the network). Other series
    (time series, a few scattered slices) always take one view. ``threshold`` is the brain
    probability at and above which a voxel is brain; ``epi_threshold``, when set, replaces it for
    echo-planar series (fMRI, diffusion, spin-echo EPI), on which a network trained mostly on T1 is
    less sure of the brain's edge; ``contrast_threshold``, when set, replaces it for other series
    acquired after a contrast agent, whose enhancing dura and vessels at the brain's rim the network
    takes for brain (its 3D steps stay the same). ``end_threshold`` (a threshold for the ends of the brain) and
    ``smooth_mm`` (a 3D Gaussian on the probabilities first) are for regular T1-like volumes
    (``dicom_node.imaging.thresholding``), as is ``valley``, a (low, high) range in which each such
    series takes its own threshold: the one fewest voxels lie near (within ``valley_window``/2). ``mirror`` averages each slice's logits with those of its
    left-right mirror (``dicom_node.imaging.mirror``). ``contrast_rim``, when set, trims a fused
    contrast-enhanced series' mask of the bright voxels at its surface (at least that many times the
    mask's median intensity), except where the probability is ``contrast_rim_below`` or more
    (``dicom_node.imaging.thresholding.cut_and_clean``). A weights file without them gets the
    defaults: one view at 0.5, as every model before 1.3.0 was run.
    """

    views: int = 1
    grid_size: int = 160
    step: int = 1
    threshold: float = 0.5
    epi_threshold: float | None = None
    contrast_threshold: float | None = None
    end_threshold: float | None = None
    smooth_mm: float = 0.0
    valley: tuple[float, float] | None = None
    valley_window: float = 0.1
    mirror: bool = False
    contrast_rim: float | None = None
    contrast_rim_below: float | None = None

    def __post_init__(self) -> None:
        if self.views not in (1, 3):
            raise ValueError(f"inference views must be 1 or 3, not {self.views}.")
        if not isinstance(self.mirror, bool):
            raise ValueError(f"inference mirror must be true or false, not {self.mirror!r}.")
        if not 0.0 <= self.smooth_mm <= 10.0:
            raise ValueError(f"inference smooth_mm must lie between 0 and 10, not {self.smooth_mm}.")
        for name, value in (("threshold", self.threshold), ("epi_threshold", self.epi_threshold), ("contrast_threshold", self.contrast_threshold),
                            ("end_threshold", self.end_threshold)):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"inference {name} must lie between 0 and 1, not {value}.")
        if self.contrast_rim is not None and not 1.0 < self.contrast_rim <= 10.0:
            raise ValueError(f"inference contrast_rim must lie above 1 and at most 10, not {self.contrast_rim}.")
        if self.contrast_rim_below is not None and not 0.0 < self.contrast_rim_below <= 1.0:
            raise ValueError(f"inference contrast_rim_below must lie above 0 and at most 1, not {self.contrast_rim_below}.")
        if self.valley is not None:
            object.__setattr__(self, "valley", tuple(float(v) for v in self.valley))  # a list, read back from a weights file
            if len(self.valley) != 2 or not 0.0 < self.valley[0] < self.valley[1] < 1.0:
                raise ValueError(f"inference valley must be two probabilities, low below high, not {self.valley}.")
        if not 0.0 < self.valley_window < 0.5:
            raise ValueError(f"inference valley_window must lie between 0 and 0.5, not {self.valley_window}.")
        if self.step < 1 or self.grid_size < 32 or self.grid_size % 16:
            raise ValueError(f"inference step must be >= 1 and grid_size a multiple of 16 >= 32, not {self.step} and {self.grid_size}.")

    def fuses(self, n_slices: int, slice_spacing: float | None) -> bool:
        """Whether a stack runs in three fused views: this inference says so and the stack is one
        regular volume (``slice_spacing`` known) of enough slices and extent."""
        return self.views == 3 and bool(slice_spacing) and n_slices >= MIN_FUSED_SLICES and n_slices * (slice_spacing or 0.0) >= MIN_FUSED_EXTENT_MM

    def threshold_for(self, echo_planar: bool, contrast_enhanced: bool) -> float:
        """The brain threshold for a series, by whether it is echo-planar, else by whether it was
        acquired after a contrast agent (an EPI with contrast, a perfusion series, is an EPI)."""
        own = self.epi_threshold if echo_planar else self.contrast_threshold if contrast_enhanced else None
        return self.threshold if own is None else own

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a loaded model: written into every SEG it makes."""

    name: str
    version: str
    arch: ArchSpec
    metrics: dict[str, float] = field(default_factory=dict)
    card: dict[str, str] = field(default_factory=dict)
    inference: InferenceSpec = field(default_factory=InferenceSpec)

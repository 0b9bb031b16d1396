"""The pseudocolor series as one Multi-frame True Color Secondary Capture image.

An alternative to :func:`dicom_node.outputs.sc.build_sc_series` (one single-frame SC image per
slice): one object with one RGB frame per source image, so a PACS indexes, stores and moves one
instance instead of 192 for the Siemens series (bench/e2e.py measures both). Both variants have
the same series UID and number: either one is "the pseudocolor series" of a job.

The frames follow the source images in order. The Source Image Sequence has one item per frame,
in frame order, and the Frame Increment Pointer names the Frame Label Vector, which labels each
frame with its source's Instance Number (and frame number for Enhanced sources). As in sc.py,
Pixel Spacing and Patient Orientation are the first slice's: the SC IODs have no per-frame
geometry.
"""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, MultiFrameTrueColorSecondaryCaptureImageStorage

from dicom_node.imaging.loading import MRSeries, SliceInfo, per_source_image
from dicom_node.imaging.pseudocolor import PseudocolorSettings
from dicom_node.outputs.common import Equipment, derive_uid
from dicom_node.outputs.sc import build_sc_series, source_item

_FRAME_LABEL_VECTOR = 0x00182002


def build_sc_multiframe(
    series: MRSeries,
    rgb: np.ndarray,
    equipment: Equipment,
    uid_seed: str,
    settings: PseudocolorSettings,
    series_number: int | None = None,
) -> list[Dataset]:
    """One multi-frame RGB SC image of ``series`` (one frame per source image); UIDs derive from ``uid_seed``.

    A Siemens mosaic gets one frame per mosaic image, its tiles in the mosaic's layout.

    Raises:
        OutputBuildError: ``rgb`` is not uint8 ``(n, rows, cols, 3)`` matching the series, or the
            first image could not be built.
    """
    # The single-frame series' first image has every attribute the two variants share (patient,
    # study, series, equipment, description, geometry, checks): reusing it keeps the variants from
    # drifting apart, for 0.05 s of 0.09 s on the Siemens series. It is copied because the
    # single-frame images share their elements (see sc.py).
    image = copy.deepcopy(build_sc_series(series, rgb, equipment, uid_seed, settings, series_number)[0])
    sources = per_source_image(series, rgb)
    headers = {str(ds.SOPInstanceUID): ds for ds in series.datasets}
    sop_instance_uid = UID(derive_uid(uid_seed, "sc-multiframe"))
    image.SOPClassUID = image.file_meta.MediaStorageSOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
    image.SOPInstanceUID = image.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    image.NumberOfFrames = len(sources)
    image.FrameIncrementPointer = _FRAME_LABEL_VECTOR
    image.FrameLabelVector = [_frame_label(headers[info.sop_instance_uid], info) for info, _ in sources]
    image.SourceImageSequence = [source_item(headers[info.sop_instance_uid], info) for info, _ in sources]
    image.PixelData = np.ascontiguousarray(np.stack([frame for _, frame in sources])).tobytes()
    return [image]


def _frame_label(reference: Dataset, info: SliceInfo) -> str:
    """``"12"`` (source Instance Number) or ``"1 f45"`` (and its frame); at most 16 characters (SH)."""
    number = reference.get("InstanceNumber")
    label = "-" if number is None or number == "" else str(number)
    if info.frame_number is not None:
        label += f" f{info.frame_number}"
    return label[:16]

"""The binary DICOM SEG of the brain, built with highdicom.

One SEG instance per stack of distinct positions. A plain series gives exactly one, and so does a
series loaded as one volume (the default, ``load_series``); a Siemens mosaic gives one per mosaic
image, in the mosaic's layout. highdicom (and
the SEG IOD's plane-position dimension) does not allow two frames at the same position, so a time
series (e.g. fMRI, 15 positions x 10 time points) gets one SEG instance per time point, all in
one SEG series: every source instance is referenced by exactly one SEG frame.

An all-empty mask (a phantom, no brain found) still gives a SEG, with every frame present and
empty: it says "the algorithm ran and found nothing", and it validates and converts with dcmqi.
Non-empty masks omit empty frames, as viewers expect.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_node.imaging.loading import MRSeries, per_source_image, position_key
from dicom_node.imaging.model_info import ModelInfo
from dicom_node.outputs.common import (
    SEG_SERIES_OFFSET,
    Equipment,
    OutputBuildError,
    derive_uid,
    derived_series_number,
    valid_source,
)
from dicom_node.uids import short_hash

SEGMENT_LABEL = "Brain"
BRAIN_DISPLAY_RGB = (255, 170, 0)
_OPTIONAL_COPIED_SEQUENCES = ("ProcedureCodeSequence", "ReferencedPatientPhotoSequence", "ReferencedStudySequence")

_PERSON_NAME_WARNING = ".*unlikely to represent the intended person name.*"


def segment_description(model: ModelInfo) -> hd.seg.SegmentDescription:
    """Segment 1, "Brain": SNOMED CT 12738006 in category Anatomical Structure, made by the model."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=model.version[:64],
        source="dicom-node",
        parameters={"architecture": f"DeepLabV3Plus {model.arch.encoder_name} {model.arch.input_size}px"},
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Brain,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*BRAIN_DISPLAY_RGB),
    )


def build_segs(
    series: MRSeries,
    mask: np.ndarray,
    model: ModelInfo,
    equipment: Equipment,
    uid_seed: str,
    series_number: int | None = None,
) -> list[hd.seg.Segmentation]:
    """The SEG instances (usually one) of ``mask`` over ``series``; UIDs derive from ``uid_seed``.

    Raises:
        OutputBuildError: the mask does not match the series, or highdicom refuses the sources.
    """
    if mask.shape != series.pixels.shape:
        raise OutputBuildError(
            f"Mask shape {mask.shape} does not match {series.log_name} of shape {series.pixels.shape}."
        )
    number = series_number if series_number is not None else derived_series_number(series.series_number, SEG_SERIES_OFFSET)
    series_uid = derive_uid(uid_seed, "seg-series")
    description = segment_description(model)
    segs = []
    for k, (sources, frames) in enumerate(_stacks(series, mask)):
        sources = [valid_source(sources[0])[0], *sources[1:]]  # highdicom copies patient and study from the first
        try:
            with warnings.catch_warnings():
                # highdicom's person-name warning quotes the patient's name: keep it out of logs
                warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)
                seg = hd.seg.Segmentation(
                    source_images=sources,
                    pixel_array=frames,
                    segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=[description],
                    series_instance_uid=series_uid,
                    series_number=number,
                    sop_instance_uid=derive_uid(uid_seed, "seg-instance", str(k)),
                    instance_number=k + 1,
                    manufacturer=equipment.manufacturer,
                    manufacturer_model_name=equipment.model_name,
                    software_versions=list(equipment.software_versions),  # type: ignore[arg-type]  # highdicom accepts a list
                    device_serial_number=equipment.device_serial_number,
                    content_label="BRAIN",
                    content_description=f"Brain mask by {model.name} {model.version}"[:64],
                    omit_empty_frames=bool(frames.any()),
                )
        except (ValueError, TypeError, AttributeError) as exc:
            raise OutputBuildError(f"SEG for {series.log_name} could not be built: {exc}") from exc
        _drop_empty_copied_sequences(seg)
        _complete_header(seg)
        seg.SeriesDescription = f"Brain SEG {model.name} {model.version}"[:64]
        segs.append(seg)
    return segs


def _stacks(series: MRSeries, mask: np.ndarray) -> list[tuple[list[Dataset], np.ndarray]]:
    """(source datasets, mask frames) per SEG instance, in the order highdicom expects.

    A Siemens mosaic gets one SEG instance per mosaic image, its frame in the mosaic's layout
    (the tiles are not images of their own to reference).
    """
    if series.is_mosaic:
        shared_headers = _shared_orientation(series.datasets)
        return [([shared_headers[info.sop_instance_uid]], frame[None]) for info, frame in per_source_image(series, mask)]
    if series.is_multiframe:
        stacks = []
        for header in series.datasets:
            uid = str(header.SOPInstanceUID)
            indices = sorted((i for i, s in enumerate(series.slices) if s.sop_instance_uid == uid), key=lambda i: series.slices[i].frame_number or 0)
            keys = [position_key(series.slices[i]) for i in indices]
            if len(set(keys)) != len(keys):
                raise OutputBuildError(
                    f"SEG for {series.log_name}: multi-frame file {short_hash(uid)} repeats slice "
                    "positions, which a SEG cannot reference frame by frame."
                )
            stacks.append(([_shared_geometry(header)], mask[indices]))
        return stacks
    groups: list[list[int]] = []
    seen: dict[object, int] = {}
    for i, info in enumerate(series.slices):
        key = position_key(info)
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        if repeat == len(groups):
            groups.append([])
        groups[repeat].append(i)
    shared = _shared_orientation(series.datasets)
    return [([shared[series.slices[i].sop_instance_uid] for i in group], mask[group]) for group in groups]


def _shared_orientation(headers: list[Dataset]) -> dict[str, Dataset]:
    """Headers by SOP Instance UID, all stating the first one's Image Orientation (Patient).

    Scanners write the same orientation with rounding noise (GE: 1e-8) and highdicom compares
    orientations exactly. The loader has refused series whose orientations differ by more than
    1e-3, so the noise is replaced with one value in copies that only highdicom reads.
    """
    reference = headers[0].get("ImageOrientationPatient")
    result = {}
    for header in headers:
        if reference is not None and header.get("ImageOrientationPatient") != reference:
            header = copy.deepcopy(header)
            header.ImageOrientationPatient = reference
        result[str(header.SOPInstanceUID)] = header
    return result


# Copied from the source by highdicom but not in the Segmentation IOD (PS3.3 A.51).
_NOT_IN_SEG_IOD = ("RequestingService",)


def _complete_header(seg: Dataset) -> None:
    """Series date and time (when the SEG was made), ContentCreatorName, nothing outside the IOD.

    PACS file a series without SeriesDate under "?"; ContentCreatorName is Type 2 in the
    Segmentation Image module (no person made this one, so it is empty).
    """
    seg.SeriesDate = seg.ContentDate
    seg.SeriesTime = seg.ContentTime
    if "ContentCreatorName" not in seg:
        seg.ContentCreatorName = None
    for keyword in _NOT_IN_SEG_IOD:
        if keyword in seg:
            delattr(seg, keyword)


def _drop_empty_copied_sequences(seg: Dataset) -> None:
    """Remove optional study sequences highdicom copied from the source with zero items.

    Philips writes an empty Procedure Code Sequence; it is Type 3, so an empty one is an error
    for dciodvfy, while leaving it out is valid.
    """
    for keyword in _OPTIONAL_COPIED_SEQUENCES:
        if keyword in seg and len(seg.get(keyword)) == 0:
            delattr(seg, keyword)


def _shared_geometry(header: Dataset) -> Dataset:
    """A copy of an Enhanced header whose shared groups carry orientation and pixel measures.

    highdicom reads both from the Shared Functional Groups only; scanners such as Siemens XA
    put them per frame. The loader has checked that all frames share one orientation, so
    copying frame 1's items into the shared group states the same geometry. The copy is only
    read by highdicom; the referenced instance is unchanged.
    """
    if "SharedFunctionalGroupsSequence" not in header or "PerFrameFunctionalGroupsSequence" not in header:
        return header
    shared = header.SharedFunctionalGroupsSequence[0]
    first = header.PerFrameFunctionalGroupsSequence[0]
    missing = [k for k in ("PlaneOrientationSequence", "PixelMeasuresSequence") if k not in shared and k in first]
    if not missing:
        return header
    patched = copy.deepcopy(header)
    for keyword in missing:
        setattr(patched.SharedFunctionalGroupsSequence[0], keyword, copy.deepcopy(first.get(keyword)))
    return patched


def frame_source_uids(seg: Dataset) -> list[tuple[str, int | None]]:
    """(referenced SOP Instance UID, referenced frame number or None) of every SEG frame."""
    refs: list[tuple[str, int | None]] = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        frame = source.get("ReferencedFrameNumber")
        refs.append((str(source.ReferencedSOPInstanceUID), int(frame) if frame is not None else None))
    return refs



def read_seg_mask(path: Path | str, series: MRSeries, segment_number: int = 1) -> np.ndarray:
    """A SEG's segment as a bool mask over ``series`` (frames matched by SOP Instance UID and frame).

    Used for reference and expert masks. Frames referencing instances outside the series are
    ignored; slices with no frame are background.

    Raises:
        OutputBuildError: the file is not a readable SEG or matches no slice of the series.
    """
    try:
        seg = hd.seg.segread(path)
        frames = seg.pixel_array.reshape((-1, seg.Rows, seg.Columns))
    except Exception as exc:
        raise OutputBuildError(f"File {path} is not a readable DICOM SEG: {exc}") from exc
    index = {(s.sop_instance_uid, s.frame_number): i for i, s in enumerate(series.slices)}
    mask = np.zeros(series.pixels.shape, dtype=bool)
    matched = 0
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else Dataset()
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        identification = item.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        derivation = item.get("DerivationImageSequence") or shared.get("DerivationImageSequence")
        if not identification or not derivation:
            raise OutputBuildError(f"SEG {path} frame {frame + 1} lacks its segment number or source image.")
        number = int(identification[0].ReferencedSegmentNumber)
        source = derivation[0].SourceImageSequence[0]
        ref_frame = source.get("ReferencedFrameNumber")
        key = (str(source.ReferencedSOPInstanceUID), int(ref_frame) if ref_frame is not None else None)
        if number != segment_number or key not in index:
            continue
        if frames[frame].shape != series.matrix:
            raise OutputBuildError(f"SEG {path} frames are {frames[frame].shape}, the series is {series.matrix}.")
        mask[index[key]] |= frames[frame] > 0
        matched += 1
    if matched == 0:
        raise OutputBuildError(f"SEG {path} has no frame of segment {segment_number} referencing {series.log_name}.")
    return mask

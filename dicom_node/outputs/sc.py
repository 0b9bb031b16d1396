"""The pseudocolor Secondary Capture series, built with highdicom.

One single-frame RGB SC image per source slice (not one multi-frame true colour SC): PACS and
viewers that cannot show SEG, the reason this series exists, show single-frame SC reliably, and
each image can carry its own Source Image Sequence pointing at its source slice (SOP Instance
UID, plus frame number for Enhanced sources). The SC Image IOD has no Frame of Reference or
Image Plane module, so the images carry Pixel Spacing and Patient Orientation, not positions.
"""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DS

from dicom_node.imaging.loading import MRSeries, SliceInfo, per_source_image
from dicom_node.imaging.pseudocolor import PseudocolorSettings
from dicom_node.outputs.common import (
    SC_SERIES_OFFSET,
    Equipment,
    OutputBuildError,
    derive_uid,
    derived_series_number,
    valid_source,
)

_PERSON_NAME_WARNING = ".*unlikely to represent the intended person name.*"


def patient_orientation(orientation: tuple[float, ...] | None) -> tuple[str, str]:
    """Patient Orientation letters (row, column direction) of the dominant axis of each cosine."""
    if orientation is None:
        return ("L", "P")  # axial default when the source has no geometry
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    result = []
    for vector in (orientation[:3], orientation[3:]):
        axis = int(np.argmax(np.abs(vector)))
        result.append(letters[axis][0] if vector[axis] > 0 else letters[axis][1])
    return result[0], result[1]


def build_sc_series(
    series: MRSeries,
    rgb: np.ndarray,
    equipment: Equipment,
    uid_seed: str,
    settings: PseudocolorSettings,
    series_number: int | None = None,
) -> list[Dataset]:
    """One RGB SC image per slice of ``series`` (same order); UIDs derive from ``uid_seed``.

    A Siemens mosaic gets one SC image per mosaic image, its tiles in the mosaic's layout.

    The images are datasets that share the unchanged elements of one highdicom ``SCImage`` (see
    below): treat them as read-only.

    Raises:
        OutputBuildError: ``rgb`` is not uint8 ``(n, rows, cols, 3)`` matching the series.
    """
    expected = (*series.pixels.shape, 3)
    if rgb.shape != expected or rgb.dtype != np.uint8:
        raise OutputBuildError(
            f"Pseudocolor of {series.log_name} must be uint8 {expected}, not {rgb.dtype} {rgb.shape}."
        )
    number = series_number if series_number is not None else derived_series_number(series.series_number, SC_SERIES_OFFSET)
    series_uid = derive_uid(uid_seed, "sc-series")
    headers = {str(ds.SOPInstanceUID): ds for ds in series.datasets}
    description = (
        f"Brain pseudocolor: {settings.bins} gray-level bins, colormap {settings.colormap.upper()}, "
        f"range {settings.low_percentile:g}-{settings.high_percentile:g} percentile of brain pixels"
    )
    sources = per_source_image(series, rgb)  # the slices as they are; a mosaic's tiles back in their mosaic
    first, first_rgb = sources[0]
    try:
        with warnings.catch_warnings():
            # highdicom's person-name warning quotes the patient's name: keep it out of logs
            warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)
            template = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=valid_source(headers[first.sop_instance_uid])[0],
                pixel_array=first_rgb,
                photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
                bits_allocated=8,
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                series_instance_uid=series_uid,
                series_number=number,
                sop_instance_uid=_image_uid(uid_seed, first),
                instance_number=1,
                manufacturer=equipment.manufacturer,
                pixel_spacing=first.pixel_spacing,  # type: ignore[arg-type]  # highdicom stubs say int; mm are floats
                patient_orientation=patient_orientation(first.orientation),
                transfer_syntax_uid=ExplicitVRLittleEndian,
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputBuildError(f"SC image 1 of {series.log_name} could not be built: {exc}") from exc
    template.ManufacturerModelName = equipment.model_name
    template.SoftwareVersions = list(equipment.software_versions)  # type: ignore[assignment]  # a multi-valued LO
    template.DeviceSerialNumber = equipment.device_serial_number
    template.SeriesDescription = "Brain pseudocolor"
    template.DerivationDescription = description[:1024]
    template.SeriesDate = template.ContentDate  # when the series was made; PACS file it by date
    template.SeriesTime = template.ContentTime
    template.BurnedInAnnotation = "NO"
    template.ImageLaterality = "U"  # the brain is unpaired; dciodvfy requires a laterality on SC
    del template.PixelData  # each image gets its own below (VR OB: 8 bits allocated, PS3.5 8.2)

    # highdicom builds and checks the first image; the others differ from it only in the
    # per-slice attributes set here (study, patient and equipment are the series'). They share
    # the first image's element objects rather than copies of them: building the 192 images of
    # the Siemens series takes 0.07 s instead of 0.3 s (deep copies) or 0.5 s (highdicom per
    # slice), and write_datasets encodes each shared element once.
    images = []
    for index, (info, image_rgb) in enumerate(sources):
        image = _sharing_elements(template)
        sop_instance_uid = _image_uid(uid_seed, info)
        image.add_new(0x00080018, "UI", sop_instance_uid)  # SOP Instance UID
        image.file_meta.add_new(0x00020003, "UI", sop_instance_uid)  # Media Storage SOP Instance UID
        image.add_new(0x00200013, "IS", index + 1)  # Instance Number
        if info.pixel_spacing is not None:  # as highdicom writes it
            image.add_new(0x00280030, "DS", [DS(value, auto_format=True) for value in info.pixel_spacing])
        elif "PixelSpacing" in image:  # never carry the first slice's spacing onto one that has none
            del image.PixelSpacing
        image.add_new(0x00200020, "CS", list(patient_orientation(info.orientation)))  # Patient Orientation
        image.add_new(0x00082112, "SQ", [source_item(headers[info.sop_instance_uid], info)])  # Source Image Sequence
        image.add_new(0x7FE00010, "OB", np.ascontiguousarray(image_rgb).tobytes())
        images.append(image)
    return images


def _sharing_elements(template: Dataset) -> Dataset:
    """A dataset holding ``template``'s element objects (file meta too), not copies of them.

    Safe only because the caller replaces per-slice elements (``add_new``) and never assigns
    to one (``ds.X = v`` would change the shared element, in every image).
    """
    image = Dataset(dict(template.items()))
    image.file_meta = FileMetaDataset(dict(template.file_meta.items()))
    image.preamble = template.preamble
    return image


def _image_uid(uid_seed: str, info: SliceInfo) -> str:
    return derive_uid(uid_seed, "sc-image", info.sop_instance_uid, str(info.frame_number or 0))


def source_item(reference: Dataset, info: SliceInfo) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.SOPClassUID
    item.ReferencedSOPInstanceUID = reference.SOPInstanceUID
    if info.frame_number is not None:
        item.ReferencedFrameNumber = info.frame_number
    purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item

"""Output objects as DICOM Part 10 files, each written whole or not at all (``storage.atomic_files``).

The SC images of a series share most of their element objects (``sc.py``), and pydicom encodes
every element of every file anew: for the 192 images of the Siemens series that took longer
than building them. :func:`write_datasets` encodes each shared element once and joins the
bytes. Its files are byte-identical to ``dcmwrite(..., enforce_file_format=True)`` (a test
checks it); datasets it cannot speed up safely go through ``dcmwrite`` itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.receive.storage import atomic_files


@dataclass(frozen=True)
class OutputFile:
    """A written output object and the UIDs its export row needs (no second read of the file)."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str

    @classmethod
    def of(cls, ds: Dataset, path: Path) -> OutputFile:
        return cls(path, str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))

    @classmethod
    def read(cls, path: Path) -> OutputFile:
        """The UIDs of a file written earlier."""
        return cls.of(dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SeriesInstanceUID"]), path)


def write_outputs(datasets: Sequence[Dataset], folder: Path) -> list[OutputFile]:
    """:func:`write_datasets`, each file with its UIDs."""
    return [OutputFile.of(ds, path) for ds, path in zip(datasets, write_datasets(datasets, folder))]


# id(element) -> (element, its encoding). The element is kept so that its id stays its own.
ElementCache = dict[int, tuple[DataElement, bytes]]


def write_dataset(ds: Dataset, folder: Path) -> Path:
    """Write one dataset as ``folder/<SOP Instance UID>.dcm``."""
    return write_datasets([ds], folder)[0]


def write_datasets(datasets: Iterable[Dataset], folder: Path) -> list[Path]:
    """Write each dataset as ``folder/<SOP Instance UID>.dcm``; shared elements are encoded once."""
    cache: ElementCache = {}
    return atomic_files(folder, ((f"{ds.SOPInstanceUID}.dcm", encode_part10(ds, cache)) for ds in datasets))


def encode_part10(ds: Dataset, cache: ElementCache | None = None) -> bytes:
    """``ds`` as the bytes of a Part 10 file, as ``dcmwrite(enforce_file_format=True)`` writes it.

    Elements found in ``cache`` (by identity) are not encoded again. Only explicit VR little
    endian datasets built in memory take this path; anything else (a dataset read from a file,
    another transfer syntax) is left to ``dcmwrite``. An ambiguous VR at the top level (a SEG's
    Pixel Data, "OB or OW") is resolved in place, as ``dcmwrite`` resolves it; handing the SEG to
    ``dcmwrite`` when it was met, after everything else was encoded, encoded the SEG twice.
    """
    if ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian or None not in ds.original_encoding:
        return _dcmwrite_bytes(ds)
    # Writing fills in the file meta (group length, missing version): do it on copies of its few
    # elements, as dcmwrite does on a deep copy, which costs more than the rest of a file here.
    meta = FileMetaDataset({tag: copy.copy(element) for tag, element in ds.file_meta.items()})
    meta.MediaStorageSOPClassUID = ds.SOPClassUID  # as dcmwrite does: the meta names the dataset
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    charset = ds.get("SpecificCharacterSet", "iso8859")
    cache = {} if cache is None else cache
    out = _explicit_little_buffer()
    out.write(ds.preamble or b"\x00" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:  # retired group lengths are not written (PS3.5 7.2)
            continue
        element = ds[tag]
        hit = cache.get(id(element))
        if hit is None:
            if " or " in element.VR:  # resolved from the dataset, in place, as dcmwrite resolves it
                correct_ambiguous_vr_element(element, ds, True)
                if " or " in element.VR:  # unresolvable here: dcmwrite decides what to do with it
                    return _dcmwrite_bytes(ds)
            one = _explicit_little_buffer()
            write_data_element(one, element, charset)
            hit = cache[id(element)] = (element, one.getvalue())
        out.write(hit[1])
    return out.getvalue()


def _explicit_little_buffer() -> DicomBytesIO:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    return buffer


def _dcmwrite_bytes(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()

"""Small helpers for the node tests."""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, after its File Meta group (what went over the wire)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM", f"{path} is not a Part 10 file"
    # (0002,0000) UL, explicit VR little endian: tag(4) VR(2) len(2) value(4)
    assert data[132:136] == b"\x02\x00\x00\x00"
    group_length = struct.unpack("<I", data[140:144])[0]
    return data[144 + group_length :]


def stored_path(data_dir: Path, source: Path) -> Path:
    ds = dcmread(source, stop_before_pixels=True)
    return data_dir / "incoming" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def late_copies(sources: list[Path], out: Path) -> list[Path]:
    """Copies of ``sources`` with new SOP Instance UIDs in the same series (late arrivals)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, src in enumerate(sources):
        ds = dcmread(src)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out / f"late-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def association_request(called: str = "DICOMNODE", calling: str = "HOSTILE") -> bytes:
    """An A-ASSOCIATE-RQ PDU for Verification, as any SCU would send it (raw-socket clients; bench too)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()

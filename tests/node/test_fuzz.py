"""Property-based fuzz over the network: whatever arrives, the node answers, keeps only what it acknowledged, stays up."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

uid_text = st.one_of(
    st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,6}){1,6}", fullmatch=True),
    st.text(alphabet="0123456789./\\abc-_ ", min_size=0, max_size=70),
    st.sampled_from(["..", "/", "1.2/../../x", "", "1" * 65]),
)


@st.composite
def datasets(draw) -> Dataset:  # type: ignore[no-untyped-def]
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    # pynetdicom's SCU itself refuses to send an empty or malformed Affected SOP Instance UID, so
    # that one stays sendable; the other UIDs are fuzzed freely (path-like SOP UIDs: test_bad_input).
    ds.SOPInstanceUID = draw(st.from_regex(r"1\.2\.[1-9][0-9]{0,8}(\.[1-9][0-9]{0,4}){0,4}", fullmatch=True))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        value = draw(st.one_of(st.none(), uid_text))  # None: the attribute is missing
        if value is not None:
            setattr(ds, keyword, value)
    ds.Modality = draw(st.sampled_from(["MR", "CT", "", "SEG"]))
    ds.PatientName = draw(st.text(max_size=20))
    rows, cols = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    declared = rows * cols * 2
    ds.PixelData = b"\x00" * draw(st.sampled_from([declared, max(declared - 2, 0), declared + 8]))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_fuzzed_datasets_are_answered_and_only_acknowledged_ones_are_kept(node_factory, tmp_path: Path) -> None:
    node = node_factory(args=("--no-processing",)).start()
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    acknowledged: set[str] = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(datasets())
    def send(ds: Dataset) -> None:
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
        assert assoc.is_established, "the node stopped accepting associations"
        try:
            status = assoc.send_c_store(ds)
        finally:
            if assoc.is_established:
                assoc.release()
        assert status and "Status" in status, "a C-STORE went unanswered"
        if status.Status == 0x0000:
            acknowledged.add(str(ds.SOPInstanceUID))
        else:
            assert (status.Status & 0xF000) in (0xA000, 0xC000)

    send()
    stored = {p.stem for p in (node.data_dir / "incoming").rglob("*.dcm")} if (node.data_dir / "incoming").exists() else set()
    assert stored == acknowledged
    assert all(p.resolve().is_relative_to(node.data_dir.resolve()) for p in node.data_dir.rglob("*"))
    assert subprocess.run(["echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port)]).returncode == 0
    assert node.stop() == 0

"""Export over several associations at once, to a real Orthanc: every object arrives once, the
results match the files, and one bad file does not hold back the others."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from dicom_node.config import Destination
from dicom_node.export.sender import send_in_parallel
from tests.conftest import siemens_files


def test_objects_spread_over_associations_all_arrive_once(orthanc) -> None:
    files = siemens_files()[:11]
    peer = Destination(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    results = send_in_parallel(peer, files, "DICOMNODE", associations=4)
    assert [r.path for r in results] == files and all(r.ok for r in results)
    assert orthanc.instance_uids() == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert len(orthanc.get("/instances")) == len(files)


def test_an_unreadable_file_fails_alone(orthanc, tmp_path: Path) -> None:
    files = siemens_files()[:5]
    gone = tmp_path / "gone.dcm"
    peer = Destination(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    results = send_in_parallel(peer, [*files, gone], "DICOMNODE", associations=2)
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert results[-1].status is None and "cannot read" in (results[-1].error or "")
    assert len(orthanc.get("/instances")) == 5


def test_a_pacs_that_is_down_leaves_every_result_unsent(orthanc) -> None:
    orthanc.stop()
    peer = Destination(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    results = send_in_parallel(peer, siemens_files()[:6], "DICOMNODE", associations=3)
    assert len(results) == 6 and all(r.status is None and r.error for r in results)

"""A PACS outage: later series are still processed at once, and every result goes out, once, when
the PACS returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, SIEMENS, Orthanc, storescu, wait_until

PHILIPS = SHARED_DATA / "dicom" / "sag-t1-philips-ingenia"


@pytest.mark.timeout(900)
def test_processing_goes_on_while_the_pacs_is_down_and_results_go_out_when_it_returns(node_factory, orthanc: Orthanc, tmp_path: Path) -> None:
    orthanc.stop()
    node = node_factory({
        "DICOM_NODE_FLOWS": "off",
        "DICOM_NODE_SERIES_TIMEOUT": "2",
        "DICOM_NODE_DESTINATIONS": orthanc.destination,
        "DICOM_NODE_EXPORT_BACKOFF_S": "1",
        "DICOM_NODE_EXPORT_BACKOFF_MAX_S": "3",
    }).start()
    assert storescu(node.port, SIEMENS).returncode == 0
    wait_until(lambda: (j := node.jobs()) and j[0]["state"] == "succeeded", timeout=300, what="the first series processed")
    assert storescu(node.port, PHILIPS).returncode == 0
    # The second series is processed while the first one's results still wait for the PACS.
    jobs = wait_until(lambda: (j := node.jobs()) and len(j) == 2 and all(x["state"] == "succeeded" for x in j) and j, timeout=300,
                      what="the second series processed during the outage")
    assert all(j["attempts"] == 1 for j in jobs)
    assert orthanc.proc is not None and orthanc.proc.poll() is not None  # still down

    orthanc.start()
    expected = 2 + 192 + 170  # two SEG, and one SC per slice (the Philips series holds 170 slices)
    wait_until(lambda: len(orthanc.instance_uids()) >= expected, timeout=300, interval=1, what="every result at the PACS")
    assert len(orthanc.instance_uids()) == expected
    assert node.stop() == 0

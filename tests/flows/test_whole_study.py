"""A whole study as a scanner sends it, pushed by DCMTK storescu to the node exporting to Orthanc
and to a storescp that counts C-STOREs: per series the job's end and reason, and exactly what the
PACS holds."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from dicom_node.uids import short_hash
from tests.conftest import Orthanc, free_port, wait_for_port, wait_until
from tests.flows.helpers import orthanc_series_by_modality
from tests.study import StudySeries, build_study

STATE = {"selected": "succeeded", "skipped": "skipped", "no-brain": "no-brain"}
TERMINAL = ("succeeded", "skipped", "no-brain", "failed")


class CountingPacs:
    """DCMTK storescp as a second destination; its verbose log counts the C-STORE requests."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = root / "storescp.log"
        (root / "received").mkdir(parents=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["storescp", "-v", "-aet", "COUNTER", "-od", str(root / "received"), str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)

    @property
    def destination(self) -> str:
        return f"COUNTER@127.0.0.1:{self.port}"

    def stores(self) -> int:
        return len(re.findall(r"Received Store Request", self.log.read_text(errors="replace")))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def expected_at_pacs(study: list[StudySeries]) -> tuple[int, list[int]]:
    selected = [s for s in study if s.expected == "selected"]
    return len(selected), sorted(s.sc_images for s in selected)


@pytest.mark.timeout(1800)
def test_a_whole_study_gets_one_result_per_head_series_and_nothing_else(node_factory, orthanc: Orthanc, tmp_path: Path) -> None:
    study = build_study(tmp_path / "study")
    counter = CountingPacs(tmp_path / "counter")
    try:
        node = node_factory({
            "DICOM_NODE_FLOWS": "off",  # the job seam is the same in every mode; the flows have their own tests
            # Long enough that a busy machine's pauses inside one push do not split a series into
            # versions (versions have their own tests), short enough for a test.
            "DICOM_NODE_SERIES_TIMEOUT": "8",
            "DICOM_NODE_DESTINATIONS": f"{orthanc.destination},{counter.destination}",
        }).start()
        pushed = subprocess.run(["storescu", "-aec", "DICOMNODE", "+sd", "+r", "--no-halt", "127.0.0.1", str(node.port), str(tmp_path / "study")],
                                capture_output=True, text=True, timeout=600)
        assert pushed.returncode == 0, pushed.stderr[-2000:]

        def all_done() -> list[dict] | None:
            jobs = node.jobs()
            return jobs if len(jobs) == len(study) and all(j["state"] in TERMINAL for j in jobs) else None

        jobs = {j["series"]: j for j in wait_until(all_done, timeout=900, interval=2, what="every series' job ended")}
        for series in study:
            job = jobs[f"series-{short_hash(series.series_instance_uid)}"]
            assert job["state"] == STATE[series.expected], (series.name, job["state"], job["error"])
            assert job["version"] == 1 and job["attempts"] == 1, series.name
            if series.expected == "skipped":
                assert series.reason in job["reason"] and "brain-mr" in job["reason"], (series.name, job["reason"])
            elif series.expected == "no-brain":
                assert job["reason"].startswith("no brain: "), (series.name, job["reason"])
            assert series.series_instance_uid not in (job["reason"] or ""), series.name
        n_seg, sc_counts = expected_at_pacs(study)

        def pacs_complete() -> dict | None:
            held = orthanc_series_by_modality(orthanc)
            segs = held.get("SEG", [])
            scs = sorted(s["instances"] for s in held.get("OT", []) + held.get("SC", []))
            return held if len(segs) == n_seg and scs == sc_counts else None

        held = wait_until(pacs_complete, timeout=600, interval=2, what="every result at the PACS")
        assert set(held) <= {"SEG", "OT", "SC"} and [s["instances"] for s in held["SEG"]] == [1] * n_seg
        total = n_seg + sum(sc_counts)
        wait_until(lambda: counter.stores() >= total, timeout=300, what="every object at the counting PACS")
        time.sleep(3)  # a duplicate send would come now, on the export loop's next ticks
        assert counter.stores() == total  # one C-STORE per object, per destination
        assert len(orthanc.instance_uids()) == total
        assert node.stop() == 0
        log = node.log()  # what operators read never names a series by its UID
        assert not [s.name for s in study if s.series_instance_uid in log]
    finally:
        counter.stop()

"""Load: 8 scanners at once, 2,400 instances in 16 series; everything acknowledged is kept, every series is a job."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, func, select

from dicom_node.db.models import Instance
from tests.conftest import SHARED_DATA, acknowledged_files, storescu, wait_until
from tests.node.helpers import dataset_bytes, stored_path

SCANNERS, SERIES_PER_SCANNER = 8, 2


def _copies(out: Path) -> list[list[Path]]:
    """Per scanner, its own studies: copies of the EPI series with new UIDs."""
    sources = [dcmread(p) for p in sorted((SHARED_DATA / "dicom" / "epi-ge-discovery").glob("*.dcm"))]
    batches = []
    for scanner in range(SCANNERS):
        files = []
        study = generate_uid()
        for s in range(SERIES_PER_SCANNER):
            series = generate_uid()
            for i, ds in enumerate(sources):
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                path = out / f"s{scanner}" / f"{s}-{i}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                files.append(path)
        batches.append(files)
    return batches


def test_eight_associations_2400_instances(node_factory, tmp_path: Path) -> None:
    batches = _copies(tmp_path / "scanners")
    total = sum(len(b) for b in batches)
    assert total >= 2000
    node = node_factory({"DICOM_NODE_SERIES_TIMEOUT": "2"}, args=("--no-processing",)).start()
    with ThreadPoolExecutor(SCANNERS) as pool:
        pushes = list(pool.map(lambda b: storescu(node.port, b[1], aet=f"SCANNER{b[0]}", timeout=600), enumerate(batches)))
    acked = [Path(f) for p in pushes for f in acknowledged_files(p.stderr + p.stdout)]
    assert len(acked) == total, [p.stderr[-300:] for p in pushes if p.returncode != 0]
    for source in acked:
        assert dataset_bytes(stored_path(node.data_dir, source)) == dataset_bytes(source)
    engine = create_engine(f"sqlite:///{node.data_dir / 'dicom-node.db'}")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Instance)) == total
    engine.dispose()
    # A sender that stalls for longer than the quiet period (this machine under load) makes the
    # rest of its series a second job version, as it should: count each series' latest version.
    series_count, per_series = SCANNERS * SERIES_PER_SCANNER, total // (SCANNERS * SERIES_PER_SCANNER)

    def every_series_complete() -> dict[str, dict] | None:
        latest: dict[str, dict] = {}
        for job in node.jobs():
            uid = job["series"]
            if job["version"] > latest.get(uid, {"version": 0})["version"]:
                latest[uid] = job
        done = len(latest) == series_count and all(j["instances"] == per_series for j in latest.values())
        return latest if done else None

    latest = wait_until(every_series_complete, timeout=60, what="every series a job holding all its instances")
    assert all(job["state"] == "queued" for job in latest.values())
    assert node.stop() == 0

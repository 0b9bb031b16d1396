"""Expert masks: SEGs sent to the node that reference a series it holds and that it did not make."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.config import Settings
from dicom_node.db.models import ExpertMask, Instance, Job, Output, Series
from dicom_node.db.session import Database
from dicom_node.jobs.dispatch import Outcome, handler_for
from dicom_node.jobs.kinds import JobKind
from dicom_node.jobs.listing import JobInput
from dicom_node.uids import short_hash

log = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
HOLDOUT_FRACTION = 0.2


def split_for(series_uid: str) -> str:
    """'holdout' or 'train', fixed by the source series: a case never changes side between rounds."""
    bucket = int(hashlib.sha256(series_uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "holdout" if bucket < HOLDOUT_FRACTION else "train"


def referenced_series(path: Path) -> list[str]:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=["ReferencedSeriesSequence"])
    return [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in item]


def register_expert_masks(session: Session, series_id: int) -> int:
    """Record every SEG of ``series_id`` that qualifies as an expert mask; return how many are new."""
    new = 0
    segs = session.scalars(select(Instance).where(Instance.series_id == series_id, Instance.sop_class_uid == SEG_STORAGE))
    for instance in segs:
        if session.scalar(select(ExpertMask.id).where(ExpertMask.instance_id == instance.id)) is not None:
            continue
        if session.scalar(select(Output.id).where(Output.sop_instance_uid == instance.sop_instance_uid)) is not None:
            continue  # one of ours, sent back unchanged
        for series_uid in referenced_series(Path(instance.path)):
            source = session.scalar(select(Series).where(Series.series_instance_uid == series_uid))
            if source is None or source.modality != "MR":
                continue
            session.add(ExpertMask(instance_id=instance.id, source_series_id=source.id, calling_ae=instance.calling_ae, split=split_for(series_uid)))
            log.info("expert mask %s for series %s", short_hash(instance.sop_instance_uid), short_hash(series_uid))
            new += 1
            break
    return new


@handler_for(JobKind.REGISTER_SEG)
def register_seg_job(db: Database, _settings: Settings, job: JobInput) -> Outcome:
    """A completed SEG series: register the expert masks among its objects (idempotent on a rerun)."""
    with db.session() as session:
        series_id = session.scalar(select(Job.series_id).where(Job.id == job.job_id))
        count = register_expert_masks(session, series_id) if series_id is not None else 0
    return Outcome(message=f"{count} expert mask(s) registered")

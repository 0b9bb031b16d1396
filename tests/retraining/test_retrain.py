"""Expert masks in, a new model version out: the registry, the promotion gate and rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_node.config import Settings
from dicom_node.db.models import Job, JobState, ModelStatus
from dicom_node.db.session import Database
from dicom_node.imaging.model_info import ArchSpec
from dicom_node.imaging.network import build_network, load_weights, save_weights
from dicom_node.jobs.dispatch import run_job
from dicom_node.jobs.tracker import close_complete_series
from dicom_node.models.registry import RegistryError, adopt_shipped, list_models, production, promote, register, rollback
from dicom_node.models.retraining import RoundResult, conclude_round, expert_case_refs, load_case, round_verdict, score
from dicom_node.models.shipped import production_weights
from dicom_node.receive.ingest import ingest_file
from tests.conftest import SHARED_DATA, SIEMENS, siemens_files, storescu, wait_until

REFERENCE_SEG = SHARED_DATA / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"


def _relabel(weights: Path, out: Path, version: str) -> Path:
    network, info = load_weights(weights, "cpu")
    return save_weights(out, network, info.arch, name=info.name, version=version, metrics=info.metrics)


@pytest.mark.timeout(1500)
def test_expert_seg_pushed_with_storescu_starts_a_round_that_registers_a_version(node_factory, trained_weights: Path) -> None:
    node = node_factory({
        "DICOM_NODE_FLOWS": "off",
        "DICOM_NODE_SERIES_TIMEOUT": "1",
        "DICOM_NODE_MODEL_WEIGHTS": str(trained_weights),
        "DICOM_NODE_RETRAIN_MIN_MASKS": "1",
        "DICOM_NODE_RETRAIN_EPOCHS": "1",
        "DICOM_NODE_RETRAIN_SAMPLES_PER_EPOCH": "32",
    }).start()
    assert storescu(node.port, SIEMENS).returncode == 0
    wait_until(lambda: any(j["kind"] == "process_series" and j["state"] == "succeeded" for j in node.jobs()), 300, what="series processed")
    # -R: propose the file's own SOP class (DCMTK's default list has no Segmentation Storage).
    assert storescu(node.port, [REFERENCE_SEG], "-R", aet="EXPERT").returncode == 0

    round_job = wait_until(lambda: next((j for j in node.jobs() if j["kind"] == "retrain" and j["state"] in ("succeeded", "failed")), None), 600, what="retraining round")
    assert round_job["state"] == "succeeded", round_job["error"]
    models = json.loads(node.cli("models", "list", "--json").stdout)
    assert [m["status"] for m in models][0] in ("production", "retired")
    new = models[-1]
    assert new["version"] == "0.0.1-test-r1" and new["parent"] == "0.0.1-test" and new["n_masks"] == 1
    assert new["status"] in ("production", "rejected")
    assert 0.0 <= new["metrics"]["dice"] <= 1.0 and "production" in new["metrics"] and new["metrics"]["history"]
    assert node.stop() == 0


@pytest.fixture
def db(migrated_db: Database) -> Database:
    return migrated_db


def test_promotion_gate_keeps_a_worse_candidate_out(db: Database, tmp_path: Path, trained_weights: Path) -> None:
    settings = Settings(data_dir=tmp_path, min_free_bytes=0)
    for path in [*siemens_files(), REFERENCE_SEG]:  # the series and an expert's mask of it, as received
        ingest_file(db, path, settings.incoming_dir)
    with db.session() as session:
        close_complete_series(session, quiet_s=0)
        for job in session.scalars(select(Job)).all():
            job.state = JobState.RUNNING
    from dicom_node.models.expert_masks import register_expert_masks

    with db.session() as session:
        seg_series = session.scalars(select(Job).where(Job.kind == "register_seg")).one().series_id
        assert register_expert_masks(session, seg_series) == 1
        adopt_shipped(session, trained_weights, "0.0.1-test", settings.models_dir)

    worse = save_weights(tmp_path / "random.pt", build_network(ArchSpec(input_size=128)), ArchSpec(input_size=128), name="random", version="random-1")
    cases = [load_case(ref) for ref in expert_case_refs(db)]
    candidate, current = score(worse, cases)["overall"], score(trained_weights, cases)["overall"]
    assert candidate["dice"] < current["dice"]
    result = RoundResult(version="random-1", status=round_verdict(candidate, current), parent="0.0.1-test", candidate=candidate,
                         production=current, evaluated_on="training masks", n_train=1, n_eval=1, n_masks=1, weights_path=worse)
    assert not result.promoted
    with db.session() as session:
        conclude_round(session, result)
    with db.session() as session:
        statuses = {m.version: m.status for m in list_models(session)}
        assert statuses == {"0.0.1-test": "production", "random-1": "rejected"}
        assert production_weights(db, settings) == settings.models_dir / "0.0.1-test.pt"


def test_rollback_restores_the_previous_production_model_for_the_next_job(db: Database, tmp_path: Path, trained_weights: Path) -> None:
    settings = Settings(data_dir=tmp_path, min_free_bytes=0, flows="off")
    second = _relabel(trained_weights, tmp_path / "second.pt", "0.0.2-test")
    with db.session() as session:
        adopt_shipped(session, trained_weights, "0.0.1-test", settings.models_dir)
        register(session, "0.0.2-test", second, ModelStatus.CANDIDATE, parent="0.0.1-test")
        promote(session, "0.0.2-test")
    assert production_weights(db, settings) == second
    with db.session() as session:
        assert rollback(session).version == "0.0.1-test"
    with db.session() as session:
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            rollback(session)

    for path in siemens_files():  # the next job
        ingest_file(db, path, settings.incoming_dir)
    with db.session() as session:
        (job,) = close_complete_series(session, quiet_s=0)
        job.state = JobState.RUNNING
    run_job(db, settings, job.id)
    with db.session() as session:
        done = session.get(Job, job.id)
        assert done.state is JobState.SUCCEEDED and done.model_version == "0.0.1-test"


def test_an_upgrade_that_ships_a_new_model_adopts_it_and_can_roll_back(db: Database, tmp_path: Path, trained_weights: Path) -> None:
    """The shipped file is replaced in place by an upgrade; the registry's copies keep each version loadable."""
    settings = Settings(data_dir=tmp_path / "node", min_free_bytes=0, flows="off")
    shipped = _relabel(trained_weights, tmp_path / "shipped.pt", "1.0.0")
    with db.session() as session:
        assert adopt_shipped(session, shipped, "1.0.0", settings.models_dir).version == "1.0.0"
    _relabel(trained_weights, shipped, "1.1.0")  # the upgrade
    with db.session() as session:
        assert adopt_shipped(session, shipped, "1.1.0", settings.models_dir).version == "1.1.0"
        assert adopt_shipped(session, shipped, "1.1.0", settings.models_dir).version == "1.1.0"  # a restart changes nothing
        assert {m.version: m.status for m in list_models(session)} == {"1.0.0": "retired", "1.1.0": "production"}
        assert rollback(session).version == "1.0.0"
    assert load_weights(production_weights(db, settings), "cpu")[1].version == "1.0.0"

    with db.session() as session:  # a retrained model in production stays there; the next shipped one waits
        promote(session, "1.1.0")
        retrained = _relabel(trained_weights, settings.models_dir / "1.1.0-r1.pt", "1.1.0-r1")
        register(session, "1.1.0-r1", retrained, ModelStatus.PRODUCTION, parent="1.1.0")
    _relabel(trained_weights, shipped, "1.2.0")
    with db.session() as session:
        assert adopt_shipped(session, shipped, "1.2.0", settings.models_dir).version == "1.1.0-r1"
        assert {m.version: m.status for m in list_models(session)}["1.2.0"] == "candidate"


def test_rollback_refuses_a_version_whose_weights_changed(db: Database, tmp_path: Path, trained_weights: Path) -> None:
    """Releases before 1.2.0 registered the shipped file itself; an upgrade overwrites it."""
    shipped = _relabel(trained_weights, tmp_path / "shipped.pt", "1.0.0")
    with db.session() as session:
        register(session, "1.0.0", shipped, ModelStatus.PRODUCTION, metrics={"source": "shipped"})
        register(session, "1.0.0-r1", _relabel(trained_weights, tmp_path / "r1.pt", "1.0.0-r1"), ModelStatus.PRODUCTION, parent="1.0.0")
    _relabel(trained_weights, shipped, "1.1.0")
    with db.session() as session:
        with pytest.raises(RegistryError, match="missing or changed"):
            rollback(session)
    with db.session() as session:
        assert production(session).version == "1.0.0-r1"

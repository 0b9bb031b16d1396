"""Settings from the environment, and the command line as operators use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from dicom_node.config import Destination, Settings
from dicom_node.receive.storage import instance_path
from dicom_node.uids import InvalidUID, is_safe_uid, short_hash

CLI = str(Path(sys.executable).parent / "dicom-node")


def test_settings_read_operator_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_NODE_DESTINATIONS", "PACS@10.0.0.5:104, ARCHIVE@archive.local:11112")
    monkeypatch.setenv("DICOM_NODE_ALLOWED_CALLERS", "MR1,MR2")
    monkeypatch.setenv("DICOM_NODE_SERIES_TIMEOUT", "30")
    settings = Settings()
    assert settings.destinations == [Destination("PACS", "10.0.0.5", 104), Destination("ARCHIVE", "archive.local", 11112)]
    assert settings.allowed_callers == ["MR1", "MR2"]
    assert settings.series_timeout == 30 and settings.ae_title == "DICOMNODE" and settings.port == 11112
    with pytest.raises(ValidationError, match="AET@host:port"):
        Settings(destinations="PACS:104")  # type: ignore[arg-type]


def test_uid_paths_refuse_traversal(tmp_path: Path) -> None:
    assert is_safe_uid("1.2.840.10008.5.1.4.1.1.4")
    for bad in ["..", "1.2/3", "1.2.3/../../etc", "", None, "1" * 65, "1..2", "1.2.3 "]:
        assert not is_safe_uid(bad)
        with pytest.raises(InvalidUID):
            instance_path(tmp_path, "1.2", str(bad) if bad is not None else None, "1.3")  # type: ignore[arg-type]
    assert len(short_hash("1.2.3")) == 10 and "1.2.3" not in short_hash("1.2.3")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_cli_db_upgrade_and_jobs(tmp_path: Path) -> None:
    env = {"DICOM_NODE_DATA_DIR": str(tmp_path)}
    from alembic.script import ScriptDirectory

    from dicom_node.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    up = _run("db", "upgrade", env=env)
    assert up.returncode == 0 and up.stdout.strip() == f"database at revision {head}", up.stderr
    assert json.loads(_run("jobs", "--json", env=env).stdout) == []
    table = _run("jobs", env=env)
    assert table.returncode == 0 and table.stdout.split()[:3] == ["id", "state", "kind"]


def test_cli_names_the_bad_variable(tmp_path: Path) -> None:
    bad = _run("jobs", env={"DICOM_NODE_DATA_DIR": str(tmp_path), "DICOM_NODE_PORT": "99999"})
    assert bad.returncode != 0 and "port" in bad.stderr and "invalid configuration" in bad.stderr
    bad = _run("serve", env={"DICOM_NODE_DATA_DIR": str(tmp_path), "DICOM_NODE_DESTINATIONS": "nonsense"})
    assert bad.returncode != 0 and "AET@host:port" in bad.stderr


def test_serve_refuses_to_start_without_usable_weights(tmp_path: Path) -> None:
    missing = _run("serve", env={"DICOM_NODE_DATA_DIR": str(tmp_path), "DICOM_NODE_MODEL_WEIGHTS": str(tmp_path / "none.pt"), "DICOM_NODE_FLOWS": "off"})
    assert missing.returncode != 0 and "none.pt" in missing.stderr and "cannot start processing" in missing.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    bad = _run("serve", env={"DICOM_NODE_DATA_DIR": str(tmp_path), "DICOM_NODE_MODEL_WEIGHTS": str(corrupt), "DICOM_NODE_FLOWS": "off"})
    assert bad.returncode != 0 and "corrupt" in bad.stderr


def test_every_subcommand_parses_and_segment_refuses_without_weights(tmp_path: Path) -> None:
    for command in ("serve", "db", "jobs", "flows", "worker", "models", "retrain", "train", "evaluate", "segment"):
        helped = _run(command, "--help", env={})
        assert helped.returncode == 0 and "usage: dicom-node" in helped.stdout, (command, helped.stderr)
    (tmp_path / "in").mkdir()
    seg = _run("segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "missing.pt"), env={})
    assert seg.returncode == 2 and "missing.pt" in seg.stderr

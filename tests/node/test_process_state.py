"""Library code leaves process-wide state alone: the node's receive path keeps its temporary files
in its own folder without moving everyone else's."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import func, select

from dicom_node.config import Settings
from dicom_node.db.models import Instance
from dicom_node.db.session import Database
from dicom_node.receive.listener import start_listener
from tests.conftest import free_port, siemens_files, storescu


def test_a_listener_receives_through_its_tmp_folder_and_leaves_tempdir_alone(migrated_db: Database, tmp_path: Path) -> None:
    before = tempfile.gettempdir()
    settings = Settings(data_dir=tmp_path / "var", port=free_port(), host="127.0.0.1", min_free_bytes=0)
    server = start_listener(settings, migrated_db)
    try:
        assert storescu(settings.port, siemens_files()[:3]).returncode == 0
        assert tempfile.gettempdir() == before
        with migrated_db.session() as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == 3
        assert (tmp_path / "var" / "tmp").is_dir() and not any((tmp_path / "var" / "tmp").iterdir())
    finally:
        server.shutdown()

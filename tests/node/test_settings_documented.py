"""Every setting is documented in the README, and a config file accepts every documented variable."""

from __future__ import annotations

import re
from pathlib import Path

from dicom_node.config import Settings
from tests.conftest import REPO

# A valid value for each variable that differs from its default, so the file is seen to be read.
SAMPLES = {
    "AE_TITLE": "SITE_NODE", "PORT": "11999", "HOST": "127.0.0.1", "DATA_DIR": "/srv/node", "DATABASE_URL": "sqlite:////srv/n.db",
    "DESTINATIONS": "PACS@10.0.0.5:104", "SERIES_TIMEOUT": "7", "COMPLETION_GRACE_S": "2", "ALLOWED_CALLERS": "MR1,MR2", "ALLOWED_HOSTS": "10.0.0.9",
    "MIN_FREE_BYTES": "1024", "MAX_PDU": "65536", "EXPORT_MAX_ATTEMPTS": "4", "EXPORT_ASSOCIATIONS": "2", "EXPORT_BACKOFF_S": "1.5",
    "EXPORT_BACKOFF_MAX_S": "60", "EXPORT_TLS": "true", "JOB_MAX_ATTEMPTS": "5", "POLL_INTERVAL_S": "0.5", "FLOWS": "off",
    "PREFECT_PORT": "4300", "WORK_POOL": "gpu-pool", "MODEL_WEIGHTS": "/srv/models/site.pt", "DEVICE": "cpu",
    "PSEUDOCOLOR_BINS": "32", "PSEUDOCOLOR_COLORMAP": "TURBO", "PSEUDOCOLOR_SC": "multi-frame", "TLS_CERT": "/srv/tls/node.pem", "TLS_KEY": "/srv/tls/node.key",
    "TLS_CA": "/srv/tls/ca.pem", "RETRAIN_MIN_MASKS": "2", "RETRAIN_EPOCHS": "1", "RETRAIN_SAMPLES_PER_EPOCH": "64",
    "LOG_LEVEL": "DEBUG", "SERIES_RULES": "/srv/node/rules.json", "NETWORK_TIMEOUT_S": "30", "MAX_ASSOCIATIONS": "8",
}


def documented_variables() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `DICOM_NODE_([A-Z0-9_]+)` \|", section, flags=re.M)


def test_the_readme_table_lists_exactly_the_settings() -> None:
    documented = documented_variables()
    assert len(documented) == len(set(documented))
    assert {name.lower() for name in documented} == set(Settings.model_fields)


def test_a_config_file_accepts_every_documented_variable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"DICOM_NODE_{name.upper()}", raising=False)
    documented = documented_variables()
    assert set(documented) <= set(SAMPLES), f"add a sample value for {set(documented) - set(SAMPLES)}"
    config = tmp_path / "node.env"
    config.write_text("".join(f"DICOM_NODE_{name}={SAMPLES[name]}\n" for name in documented))
    monkeypatch.setenv("DICOM_NODE_CONFIG", str(config))
    from dicom_node.config import load_settings

    settings = load_settings()
    defaults = Settings.model_construct()
    for name in documented:
        field = name.lower()
        assert getattr(settings, field) != getattr(defaults, field), f"DICOM_NODE_{name} from the file was not applied"

"""docker/compose.yaml is safe as shipped: nothing published beyond loopback, secrets from the environment."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO


def compose_config(**env: str) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: run the tests with `make test` (it installs the Debian package)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ORTHANC_", "POSTGRES_", "DICOM_NODE_"))}
    check = subprocess.run(["docker-compose", "-f", str(REPO / "docker" / "compose.yaml"), "-p", "dicom-node", "config"],
                           check=False, capture_output=True, text=True, env={**clean, **env}, timeout=60)
    assert check.returncode == 0, check.stderr
    return yaml.safe_load(check.stdout)


def published(config: dict) -> list[str]:
    """Every published port as compose v1 prints it ("host_ip:published:target/proto")."""
    return [str(p) for service in config["services"].values() for p in service.get("ports", [])]


def test_compose_publishes_only_on_loopback_by_default() -> None:
    config = compose_config()
    ports = published(config)
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
    assert config["services"]["orthanc"]["environment"]["ORTHANC__AUTHENTICATION_ENABLED"] == "true"


def test_compose_takes_its_secrets_from_the_environment() -> None:
    config = compose_config(PREFECT_API_AUTH_STRING="admin:s3cret", ORTHANC_REGISTERED_USERS='{"pacs": "pw"}',
                            POSTGRES_PASSWORD="dbpw", DICOM_NODE_PUBLISH_IP="10.1.2.3", DICOM_NODE_ALLOWED_CALLERS="MRI1")
    services = config["services"]
    assert services["prefect"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == "admin:s3cret"
    assert services["node"]["environment"]["PREFECT_API_AUTH_STRING"] == "admin:s3cret"
    assert services["worker"]["environment"]["PREFECT_API_AUTH_STRING"] == "admin:s3cret"
    assert services["orthanc"]["environment"]["ORTHANC__REGISTERED_USERS"] == '{"pacs": "pw"}'
    assert ":dbpw@" in services["node"]["environment"]["DICOM_NODE_DATABASE_URL"]
    # Only the DICOM port follows DICOM_NODE_PUBLISH_IP; the web APIs stay on loopback.
    ports = published(config)
    assert [p for p in ports if not p.startswith("127.0.0.1:")] == ["10.1.2.3:11112:11112/tcp"]

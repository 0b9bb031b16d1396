"""The compose file is valid and wires the node, worker, Prefect, PostgreSQL and Orthanc together."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"


def test_compose_file_is_valid_and_complete() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: run the tests with `make test` (it installs the Debian package)")
    check = subprocess.run(["docker-compose", "-f", str(DOCKER / "compose.yaml"), "-p", "dicom-node", "config"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    config = yaml.safe_load(check.stdout)
    assert set(config["services"]) == {"node", "worker", "prefect", "postgres", "orthanc"}
    node, worker = config["services"]["node"], config["services"]["worker"]
    assert node["environment"]["DICOM_NODE_FLOWS"] == "distributed"
    assert node["environment"]["DICOM_NODE_DATABASE_URL"] == worker["environment"]["DICOM_NODE_DATABASE_URL"]
    assert node["environment"]["DICOM_NODE_DATABASE_URL"].startswith("postgresql")
    def mounts(service: dict) -> set[str]:  # compose v1 prints "source:target[:mode]"
        return {v.split(":")[1] if isinstance(v, str) else v["target"] for v in service["volumes"]}

    assert "/data" in mounts(node) and "/data" in mounts(worker)
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfile_installs_the_project_and_serves() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for needed in ("COPY dicom_node", "pip install --no-cache-dir .", 'CMD ["dicom-node", "serve"]'):
        assert needed in dockerfile
    assert "pip install --no-cache-dir -e" not in dockerfile  # a plain install: flows, migrations and weights are package data

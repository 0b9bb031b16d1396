"""``pip install .`` (not editable) gives a node that upgrades its database and serves from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import REPO, free_port, wait_for_port


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_plain_install_upgrades_and_serves_from_any_folder(tmp_path: Path) -> None:
    # Build a wheel from a copy of the tracked files (so nothing is built inside the checkout) with
    # the test venv's build tools, then install it into a fresh venv.
    source = tmp_path / "source"
    tracked = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("dicom_node-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    site = Path(_run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    # The dependencies (torch is 5 GB) come from the test venv, appended after the venv's own packages.
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    assert (site / "dicom_node" / "models" / "weights" / "brain-deeplabv3plus.pt").is_file()
    assert (site / "dicom_node" / "db" / "migrations" / "versions").is_dir()
    assert not (site / "flows").exists() and not (site / "models").exists()  # no generic top-level names

    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DICOM_NODE_", "PYTHON"))}
    env.update({"DICOM_NODE_DATA_DIR": str(tmp_path / "data"), "DICOM_NODE_FLOWS": "off", "DICOM_NODE_HOST": "127.0.0.1",
                "DICOM_NODE_PORT": str(free_port()), "DICOM_NODE_MIN_FREE_BYTES": "0"})
    where = _run(venv / "bin" / "python", "-c", "import dicom_node; print(dicom_node.__file__)", cwd=elsewhere, env=env)
    assert where.startswith(str(site))
    assert "database at revision" in _run(venv / "bin" / "dicom-node", "db", "upgrade", cwd=elsewhere, env=env)

    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        node = subprocess.Popen([venv / "bin" / "dicom-node", "serve"], cwd=elsewhere, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(int(env["DICOM_NODE_PORT"]), timeout=240, proc=node)
        echo = subprocess.run(["echoscu", "-aec", "DICOMNODE", "127.0.0.1", env["DICOM_NODE_PORT"]], capture_output=True, timeout=60)
        assert echo.returncode == 0, echo.stderr
        assert "model dicom-node-brain" in log.read_text()  # the shipped model, found inside the package
    finally:
        node.terminate()
        assert node.wait(timeout=90) == 0

"""Fixtures for the imaging tests: the shared real data, loaded series, and small weights trained here.

The real series live in ``../shared/data`` beside the clone (CI puts them there too). The weights
are trained in the session on a few Siemens slices (deepbet's mask as target) and a few phantom
slices (empty target): enough for the pipeline to find a brain in one and none in the other, not
a model to judge quality by.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dicom_node.imaging.loading import MRSeries, load_folder
from dicom_node.imaging.model_info import ArchSpec
from dicom_node.outputs.seg import read_seg_mask
from tests.conftest import SHARED_DATA

TEST_ARCH = ArchSpec(input_size=128)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "dicom").is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}: CI puts ../shared beside the clone")
    return SHARED_DATA


@functools.cache
def _load(folder: str) -> MRSeries:
    series, _ = load_folder(SHARED_DATA / "dicom" / folder)
    if len(series) != 1:
        raise RuntimeError(f"expected one series in {folder}, found {len(series)}")
    return series[0]


@pytest.fixture(scope="session")
def load_named(shared_data: Path):
    """``load_named("sag-t1-siemens-skyra")`` -> the loaded series (cached for the session)."""
    return _load


@pytest.fixture(scope="session")
def siemens_reference_mask(load_named, shared_data: Path) -> np.ndarray:
    series = load_named("sag-t1-siemens-skyra")
    return read_seg_mask(shared_data / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm", series)


@pytest.fixture(scope="session")
def heudiconv() -> Path:
    """The heudiconv wheel's test DICOM (Siemens mosaics), fetched once and checked by sha256."""
    from tests.study import heudiconv_data

    try:
        return heudiconv_data()
    except RuntimeError as exc:  # a missing download fails, never skips
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def shipped_segmenter():  # type: ignore[no-untyped-def]
    """The shipped model on the CPU, loaded once for the session."""
    from dicom_node.imaging.segmenter import Segmenter
    from dicom_node.models.shipped import default_weights_path

    if not default_weights_path().is_file():
        pytest.fail(f"the shipped weights are missing at {default_weights_path()}")
    return Segmenter.from_weights(default_weights_path(), "cpu")


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for ``path`` (warnings are allowed)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: run the tests with `make test`")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def segimage2itkimage(path: Path, out_dir: Path) -> Path:
    """Convert a SEG with dcmqi; return the first NIfTI it wrote."""
    tool = shutil.which("segimage2itkimage") or str(Path(__import__("sys").executable).parent / "segimage2itkimage")
    if not Path(tool).exists():
        pytest.fail("dcmqi's segimage2itkimage is not installed: run the tests with `make test`")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([tool, "--inputDICOM", str(path), "--outputDirectory", str(out_dir), "-t", "nifti"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    written = sorted(out_dir.glob("*.nii.gz"))
    assert written, run.stdout + run.stderr
    return written[0]

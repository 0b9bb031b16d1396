"""Echo-planar series get the model's own EPI threshold: told from the DICOM header or a BIDS sidecar.

A network trained mostly on T1 is unsure of the brain's edge on EPI (the held-out spin-echo EPI
scored precision 1.00, recall 0.74 at the T1 threshold), so a model may carry a second threshold.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_node.imaging.loading import is_echo_planar, load_series
from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import build_network, load_weights, save_weights
from dicom_node.imaging.postprocess import clean_mask
from dicom_node.imaging.segmenter import Segmenter
from dicom_node.training.data import discover_cases, load_cases, save_cases


def header(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_echo_planar_is_read_from_the_header(load_named, heudiconv: Path) -> None:  # type: ignore[no-untyped-def]
    assert load_named("epi-ge-discovery").echo_planar  # GE: ScanningSequence EP\GR
    assert load_series([heudiconv / "axasc35.dcm"]).echo_planar  # a Siemens fMRI mosaic
    for t1 in ("sag-t1-siemens-skyra", "sag-t1-philips-ingenia", "enhanced-t1-siemens-xa30"):  # GR\IR, GR, Enhanced with EchoPlanarPulseSequence NO
        assert not load_named(t1).echo_planar, t1
    assert is_echo_planar(header(EchoPlanarPulseSequence="YES"))  # Enhanced MR
    assert is_echo_planar(header(ScanningSequence=["SE", "EP"]))
    for junk in ("", "EPI", "  ", "EP\x00junk"):  # not the code EP: not EPI, and no error
        assert not is_echo_planar(header(ScanningSequence=junk)), repr(junk)
    assert not is_echo_planar(header(EchoPlanarPulseSequence="NO")) and not is_echo_planar(Dataset())


def test_the_epi_threshold_is_stored_with_the_weights_and_checked(tmp_path: Path) -> None:
    arch = ArchSpec(input_size=64)
    spec = InferenceSpec(threshold=0.6, epi_threshold=0.3)
    _, info = load_weights(save_weights(tmp_path / "w.pt", build_network(arch), arch, name="n", version="1", inference=spec))
    assert info.inference == spec
    assert (spec.threshold_for(echo_planar=True, contrast_enhanced=False), spec.threshold_for(echo_planar=False, contrast_enhanced=False)) == (0.3, 0.6)
    assert InferenceSpec(threshold=0.6).threshold_for(echo_planar=True, contrast_enhanced=False) == 0.6  # no EPI threshold: the one threshold
    with pytest.raises(ValueError, match="epi_threshold must lie between 0 and 1, not 1.5"):
        InferenceSpec(epi_threshold=1.5)


def test_an_epi_series_is_cut_at_the_epi_threshold_and_a_t1_is_not(shipped_segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    def segmenter(spec: InferenceSpec) -> Segmenter:
        return Segmenter(shipped_segmenter.network, replace(shipped_segmenter.info, inference=spec), "cpu")

    epi = load_named("epi-ge-discovery")
    low = segmenter(InferenceSpec(threshold=0.6, epi_threshold=0.2)).segment(epi)
    probs = segmenter(InferenceSpec()).predict_probabilities(epi.pixels, epi.slices[0].pixel_spacing)
    assert np.array_equal(low.mask, clean_mask(probs >= 0.2, epi.voxel_volume_ml()).mask)
    t1_only = segmenter(InferenceSpec(threshold=0.6)).segment(epi)
    assert low.mask.sum() > t1_only.mask.sum()  # a lower threshold keeps more of the EPI's edge
    philips = load_named("sag-t1-philips-ingenia")  # one view, to keep the test short
    assert np.array_equal(segmenter(InferenceSpec(threshold=0.6, epi_threshold=0.2)).segment(philips).mask,
                          segmenter(InferenceSpec(threshold=0.6)).segment(philips).mask)


def test_a_bids_sidecar_marks_a_nifti_head_as_epi_and_a_pack_keeps_it(shared_data: Path, tmp_path: Path) -> None:
    for name, sidecar in (("epi", {"ScanningSequence": "EP"}), ("t1", {"ScanningSequence": "GR_IR"}), ("junk", "not json {"), ("none", None)):
        folder = tmp_path / name
        folder.mkdir()
        for file in ("t1.nii.gz", "brainmask_deepbet.nii.gz"):
            shutil.copy(shared_data / "volumes" / "mni152-2mm" / file, folder / file)
        if sidecar is not None:
            (folder / "t1.json").write_text(json.dumps(sidecar) if isinstance(sidecar, dict) else sidecar)
    cases = discover_cases([tmp_path / n for n in ("epi", "t1", "junk", "none")])
    assert {c.name: c.echo_planar for c in cases} == {"epi": True, "t1": False, "junk": False, "none": False}
    back = load_cases(save_cases(tmp_path / "cases.npz", cases))
    assert [c.echo_planar for c in back] == [c.echo_planar for c in cases]

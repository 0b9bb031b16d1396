"""Series acquired after a contrast agent get the model's own threshold: told from the DICOM header
or a BIDS sidecar.

On a contrast-enhanced T1 the enhancing dura, sinuses and cortical veins at the brain's rim look
like brain to the network: the held-out contrast T1 scored precision 0.91 at the T1 cut, so a model
may carry a higher threshold for these series (``InferenceSpec.contrast_threshold``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node.imaging.loading import is_contrast_enhanced, load_series
from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import build_network, load_weights, save_weights
from dicom_node.imaging.segmenter import Segmenter
from dicom_node.training.data import discover_cases, load_cases, save_cases


def header(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def with_agent(source: Path, target: Path, agent: str) -> list[Path]:
    """A copy of the series in ``source`` with Contrast/Bolus Agent set to ``agent`` in every file."""
    target.mkdir()
    files = []
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.ContrastBolusAgent = agent
        ds.save_as(target / path.name)
        files.append(target / path.name)
    return files


def test_a_contrast_agent_is_read_from_the_header(load_named, shared_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The shared T1 series: Contrast/Bolus Agent absent (Siemens, GE), empty (Philips), or an Enhanced MR without the module.
    for name in ("sag-t1-siemens-skyra", "sag-t1-philips-ingenia", "enhanced-t1-siemens-xa30", "epi-ge-discovery", "t1-phantom-ge-signa"):
        assert not load_named(name).contrast_enhanced, name
    given = load_series(with_agent(shared_data / "dicom" / "sag-t1-philips-ingenia", tmp_path / "gd", "Gadovist 7.5 ml"))
    assert given.contrast_enhanced
    assert not load_series(with_agent(shared_data / "dicom" / "sag-t1-philips-ingenia", tmp_path / "none", "NONE")).contrast_enhanced
    for agent in ("GAD", "Dotarem 0.1 mmol/kg", "MultiHance", "12 ml KM"):
        assert is_contrast_enhanced(header(ContrastBolusAgent=agent)), agent
    for junk in ("", " ", "-", "0", "N/A", "no", "None", "NO CONTRAST", "non-contrast", "nativ", "keine", "without", "\x00\x00"):
        assert not is_contrast_enhanced(header(ContrastBolusAgent=junk)), repr(junk)
    assert not is_contrast_enhanced(Dataset())


def test_an_enhanced_mr_names_its_agent_in_a_sequence_and_its_frames_may_deny_it() -> None:
    agent = Sequence([header(ContrastBolusAgentNumber=1)])
    assert is_contrast_enhanced(header(ContrastBolusAgentSequence=agent))
    usage = Sequence([header(ContrastBolusUsageSequence=Sequence([header(ContrastBolusAgentNumber=1, ContrastBolusAgentAdministered="NO")]))])
    assert not is_contrast_enhanced(header(ContrastBolusAgentSequence=agent, SharedFunctionalGroupsSequence=usage))
    assert not is_contrast_enhanced(header(ContrastBolusAgentSequence=Sequence([])))


def test_the_contrast_threshold_is_stored_with_the_weights_and_an_epi_keeps_its_own(tmp_path: Path) -> None:
    arch = ArchSpec(input_size=64)
    spec = InferenceSpec(threshold=0.55, epi_threshold=0.4, contrast_threshold=0.7)
    _, info = load_weights(save_weights(tmp_path / "w.pt", build_network(arch), arch, name="n", version="1", inference=spec))
    assert info.inference == spec
    cut = {(epi, ce): spec.threshold_for(echo_planar=epi, contrast_enhanced=ce) for epi in (False, True) for ce in (False, True)}
    assert cut == {(False, False): 0.55, (False, True): 0.7, (True, False): 0.4, (True, True): 0.4}  # a perfusion EPI is an EPI
    assert InferenceSpec(threshold=0.55).threshold_for(echo_planar=False, contrast_enhanced=True) == 0.55  # none carried: the one threshold
    with pytest.raises(ValueError, match="contrast_threshold must lie between 0 and 1, not 0.0"):
        InferenceSpec(contrast_threshold=0.0)


def test_a_contrast_series_is_cut_at_its_threshold_and_a_plain_one_is_not(shipped_segmenter: Segmenter, shared_data: Path, tmp_path: Path,
                                                                          load_named) -> None:  # type: ignore[no-untyped-def]
    def segmenter(spec: InferenceSpec) -> Segmenter:
        return Segmenter(shipped_segmenter.network, replace(shipped_segmenter.info, inference=spec), "cpu")

    plain = load_named("sag-t1-philips-ingenia")  # one view (InferenceSpec's default), to keep the test short
    enhanced = load_series(with_agent(shared_data / "dicom" / "sag-t1-philips-ingenia", tmp_path / "gd", "Gadovist"))
    spec = InferenceSpec(threshold=0.5, contrast_threshold=0.8)
    high = segmenter(spec).segment(enhanced).mask
    assert np.array_equal(high, segmenter(InferenceSpec(threshold=0.8)).segment(plain).mask)
    low = segmenter(spec).segment(plain).mask
    assert np.array_equal(low, segmenter(InferenceSpec(threshold=0.5)).segment(plain).mask)
    assert high.sum() < low.sum()  # the higher cut drops the rim


def test_a_bids_sidecar_names_the_agent_of_a_nifti_head_and_a_pack_keeps_it(shared_data: Path, tmp_path: Path) -> None:
    sidecars = {"gd": {"ContrastBolusIngredient": "GADOLINIUM"}, "agent": {"ContrastBolusAgent": "Gadovist"}, "none": {"ContrastBolusIngredient": "NONE"},
                "t1": {"ScanningSequence": "GR_IR"}, "junk": "not json {", "list": ["GADOLINIUM"]}
    for name, sidecar in sidecars.items():
        folder = tmp_path / name
        folder.mkdir()
        for file in ("t1.nii.gz", "brainmask_deepbet.nii.gz"):
            shutil.copy(shared_data / "volumes" / "mni152-2mm" / file, folder / file)
        (folder / "t1.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    cases = discover_cases([tmp_path / n for n in sidecars])
    assert {c.name: c.contrast_enhanced for c in cases} == {"gd": True, "agent": True, "none": False, "t1": False, "junk": False, "list": False}
    back = load_cases(save_cases(tmp_path / "cases.npz", cases))
    assert [c.contrast_enhanced for c in back] == [c.contrast_enhanced for c in cases]

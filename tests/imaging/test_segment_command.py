"""``dicom-node segment``: exit codes, messages and the files it writes."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from dicom_node.cli import main


def run(argv: list[str]) -> int:
    return main(["segment", *argv])


def test_no_weights_is_refused_clearly(shared_data, tmp_path, capsys):
    code = run([str(shared_data / "dicom" / "epi-ge-discovery"), "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "missing.pt")])
    assert code == 2
    err = capsys.readouterr().err
    assert "No model weights at" in err and "missing.pt" in err and "DICOM_NODE_MODEL_WEIGHTS" in err
    assert not (tmp_path / "out").exists()


def test_folder_without_dicom_exits_non_zero(trained_weights, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("hello")
    code = run([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--weights", str(trained_weights), "--device", "cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Nothing could be segmented" in err and "readme.txt" in err


def test_segments_mixed_folder_and_writes_seg_sc_and_preview(shared_data, tmp_path, capsys):
    source = tmp_path / "in"
    shutil.copytree(shared_data / "dicom" / "enhanced-t1-siemens-xa30", source / "a")
    shutil.copytree(shared_data / "dicom" / "epi-ge-discovery", source / "b")
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), source / "ct.dcm")
    out = tmp_path / "out"
    # The shipped model: the plausibility gate judges real masks (the tests' small weights are unsure of these heads).
    code = run([str(source), "--out", str(out), "--device", "cpu", "--preview", str(tmp_path / "p.png")])
    assert code == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("series ")]
    assert len(lines) == 2 and all(" slices, brain " in line and " s, " in line for line in lines)
    assert "not selected by 'brain-mr': Modality is CT, not MR" in captured.err
    segs = sorted(out.glob("*/seg/*.dcm"))
    scs = sorted(out.glob("*/sc/*.dcm"))
    assert len(segs) == 1 + 1 and len(scs) == 96 + 15  # the EPI time series: its first volume
    assert len(list(tmp_path.glob("p-*.png"))) == 2


def test_rerun_rewrites_the_same_files(shared_data, tmp_path):
    args = [str(shared_data / "dicom" / "enhanced-t1-siemens-xa30"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert run(args) == 0
    first = sorted(p.name for p in (tmp_path / "out").rglob("*.dcm"))
    assert run(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.dcm")) == first


@pytest.mark.parametrize("bad", [["--bins", "1"], ["--colormap", "NOPE"]])
def test_bad_pseudocolor_options(trained_weights, tmp_path, bad, capsys):
    assert run([str(tmp_path), "--out", str(tmp_path / "o"), "--weights", str(trained_weights), *bad]) == 2
    assert "error:" in capsys.readouterr().err

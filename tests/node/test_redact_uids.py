"""redact_uids: what goes to logs and job errors carries short hashes, never full UIDs."""

from __future__ import annotations

from dicom_node.uids import redact_uids, short_hash


def test_uids_in_text_and_paths_become_their_short_hashes() -> None:
    study, series, sop = "1.2.840.113619.2.55.3.2831", "1.3.12.2.1107.5.2.43.66026", "2.25.334512345678901234567"
    text = f"cannot read /data/incoming/{study}/{series}/{sop}.dcm (series {series})"
    redacted = redact_uids(text)
    assert redacted == f"cannot read /data/incoming/{short_hash(study)}/{short_hash(series)}/{short_hash(sop)}.dcm (series {short_hash(series)})"
    for uid in (study, series, sop):
        assert uid not in redacted


def test_short_numbers_and_words_are_left_alone() -> None:
    for text in ("model 1.2 took 0.35 s", "status 0xC210", "job 12 failed: KeyError", "v1.2.3-rc", "1.2.0-r1 promoted"):
        assert redact_uids(text) == text


def test_exceptions_lose_their_uids_but_keep_their_type() -> None:
    from dicom_node.uids import redact_exception

    path = "/data/incoming/1.2.840.113619.2.55.3.2831/1.3.12.2.1107.5.2.43.66026.dcm"
    missing = redact_exception(FileNotFoundError(2, "No such file or directory", path))
    assert isinstance(missing, FileNotFoundError) and "1.2.840" not in str(missing) and short_hash("1.2.840.113619.2.55.3.2831") in str(missing)
    bad = redact_exception(ValueError(f"cannot read {path}"))
    assert isinstance(bad, ValueError) and "1.3.12" not in str(bad)

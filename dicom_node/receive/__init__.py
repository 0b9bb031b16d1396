"""Receiving: the C-STORE SCP (``listener``) and its connection handling (``association_io``),
checks and records of instances (``ingest``), durable files (``storage``, with the one atomic
write), DICOM TLS (``tls``)."""

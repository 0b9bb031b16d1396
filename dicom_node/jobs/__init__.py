"""Jobs: what a job is (``kinds``), the queue that alone writes job rows (``queue``), series
completion (``tracker``), the one handler registry every mode dispatches through (``dispatch``)."""

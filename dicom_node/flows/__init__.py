"""Prefect flows: thin wrappers that run the same job handlers' steps as tasks and report to the
dashboard. ``run`` holds how the node hands a job to a flow, in process or to a work pool."""

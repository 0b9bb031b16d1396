"""The running node: its threads (``node``), the embedded Prefect server, and how each flow mode runs a job (``modes``)."""

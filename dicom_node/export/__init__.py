"""Export: sending outputs to the configured destinations (``sender``), the durable export rows
and their retries (``queue``, ``retry``). The node's export loop is the only sender."""

"""Developer and benchmark tooling: CLI for local services, demo, data generator, simulator,
baseline policies. Not shipped to MWAA (only ``include/notify`` is)."""

"""End-to-end tier: whole runs through Prefect flows and the bundled model."""

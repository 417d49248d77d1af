"""Prefect flows: thin wiring of `mirops.steps` into tasks (retries, a UI, schedules)."""

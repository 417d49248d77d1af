"""The pipeline's stages, one module each, in the order of the picture (docs/pipeline.md):

ingest → version → audit → precompute → train → evaluate → register → promote, and monitor → dashboards.

These are the only modules that read `Settings` as a whole and join data, models and the MLOps
integrations (`audit/`, `registry/`, `monitor/`). The CLI, the Prefect flows in flows/ and the DVC stages
all call them; nothing is done twice.
"""

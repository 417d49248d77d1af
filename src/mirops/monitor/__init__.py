"""Drift monitoring with Evidently."""

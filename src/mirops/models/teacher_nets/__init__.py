"""Faithful torch ports of the EAsT reference teachers, loading their official checkpoint files."""

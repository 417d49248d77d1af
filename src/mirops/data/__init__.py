"""Datasets: the manifest contract, audio I/O, the demo renderer and DVC versions."""

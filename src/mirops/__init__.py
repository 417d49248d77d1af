"""mirops: train, audit, register and monitor music classifiers from scarce, partially labelled data."""

__version__ = "0.1.0"

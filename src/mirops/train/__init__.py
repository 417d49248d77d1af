"""Training loop and metrics (torch, numpy, scikit-learn only)."""

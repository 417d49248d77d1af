"""Features: audio front ends (log-mel) and per-clip audio descriptors; knows nothing of models."""

"""Models: frozen backbones, input transforms and output mappings (torch only)."""

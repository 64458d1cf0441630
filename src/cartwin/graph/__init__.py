"""Model graph: scale models joined by coupling variables (see spec.py)."""

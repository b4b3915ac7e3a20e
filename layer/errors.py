"""The root of Layer's own exceptions (subclasses live next to the code that raises them)."""

__all__ = ["LayerError"]


class LayerError(Exception):
    """Base of every error Layer raises on purpose."""

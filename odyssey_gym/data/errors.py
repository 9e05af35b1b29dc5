"""The data layer's one error type, below both the storage (dataset.py) and the flat view built on it (windows.py)."""


class DatasetError(Exception):
    """A dataset that cannot be read or written as asked (corrupt, truncated, missing, mismatched)."""

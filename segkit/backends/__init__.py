"""Backends: one module per model family; each turns an RGB image into a ``Result``."""

"""odyssey-gym: real-time interactive video models served as vectorized Gymnasium environments."""

__version__ = "0.1.0"

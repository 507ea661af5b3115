"""lakehouse-edge: sample sensors, queue readings durably, upload them exactly once."""

__version__ = "0.1.0"

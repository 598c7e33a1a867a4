"""clipd: storage daemon for video clips."""

__version__ = "0.1.0"

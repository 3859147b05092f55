"""edge-alarm: the school-gate and one-key panic alarm daemon for Raspberry Pi."""

__version__ = "0.1.0"

"""The package version, recorded in every checkpoint and exported file."""

__version__ = "0.1.0"

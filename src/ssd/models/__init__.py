"""The SSD network: preprocess -> backbone -> extras -> headers -> PostProcessor, and its architectures.

Importing the package registers the built-in architectures (each backbone file adds its own).
"""

from ssd.models import backbones  # noqa: F401  (registers the built-in architectures)

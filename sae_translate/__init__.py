"""sae-translate: natural-language labels for SAE features by unsupervised translation."""

__version__ = "0.1.0"

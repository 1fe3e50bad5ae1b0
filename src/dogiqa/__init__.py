"""Dog-IQA study package: standard-guided, mix-grained, training-free image quality assessment."""

__version__ = "0.1.0"

"""mlserve: train, register and serve scikit-learn models over HTTP."""

__version__ = "0.1.0"

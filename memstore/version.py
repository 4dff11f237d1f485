"""memstore's version: a leaf module, so code inside the package never imports the package root."""

__version__ = "0.1.0"

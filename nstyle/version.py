"""The release number, in a module of its own so that any layer can read it without
importing the package's public API (``nstyle/__init__``)."""

__version__ = "0.1.0"

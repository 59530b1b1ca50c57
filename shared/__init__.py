"""genre: the library every service, the CLI and training share."""

__version__ = "0.1.0"

"""fabric: a network fabric emulator with real sockets for AI inference networks."""

__version__ = "0.1.0"

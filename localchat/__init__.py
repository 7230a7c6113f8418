"""localchat: a private, offline-first chat assistant for the terminal."""

__version__ = "0.1.0"

"""StratusLab: a cloud for a scientific resource centre, and SlipStream's engine on it."""

__version__ = "0.1.0"

"""The API: the FastAPI application (``app``), its routes, and the client the CLI uses.

Importing this package imports nothing heavy: the client lives in ``client.py`` and does not
need FastAPI.
"""

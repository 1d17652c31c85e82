"""The release number, read by packaging (pyproject.toml) and shown by the CLI and the API."""

__version__ = "1.0.0"

"""Storage: the image stores (local folder, S3), the answer history (SQLite, MongoDB) and the relabel path.

Imports facexpr.core and facexpr.photo.
"""

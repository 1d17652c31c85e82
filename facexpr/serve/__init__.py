"""Serving: the Python Recognizer, batches, the recorded answers, model health and the HTTP API.

Imports facexpr.core, facexpr.photo, facexpr.storage and facexpr.model; never facexpr.learn.
"""

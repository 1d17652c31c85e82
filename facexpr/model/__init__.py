"""The model: the network and its card, the folded runtime, the registry of versions, one photo to one answer.

Imports facexpr.core, facexpr.photo and facexpr.storage.
"""

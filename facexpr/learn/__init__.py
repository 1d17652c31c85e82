"""Learning: training data, augmentation, training, retraining from corrections, evaluation.

Imports facexpr.core, facexpr.photo, facexpr.storage and facexpr.model; never facexpr.serve.
"""

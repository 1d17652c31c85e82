"""The ground every layer stands on: settings, errors, the expression labels, times.

Imports nothing of facexpr's.
"""

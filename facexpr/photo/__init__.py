"""Photos: decoding any upload to 8-bit gray, finding faces and cutting the crops the model reads.

Imports only facexpr.core.
"""

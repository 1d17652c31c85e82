"""facexpr: facial-expression recognition for headshots, improved by people's corrections."""

__version__ = "1.0.0"

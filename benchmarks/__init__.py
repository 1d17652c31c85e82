"""Side-by-side speed measurements, run by hand (never in CI): `python -m benchmarks`."""

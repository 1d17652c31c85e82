"""Packaging beyond what pyproject.toml can say: the top-level models/ folder installed as `facexpr/models`.

The shipped model lives once in git, in models/ (beside its card and learning curve, where the app,
training and the README look for it); a wheel carries it inside the package, so an installed
facexpr answers with no checkout (facexpr.model.classifier looks there when it does not run from one).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["facexpr", "facexpr.*"]), "facexpr.models"],
    package_dir={"facexpr.models": "models"},
    # *.tflite: the shipped model's LiteRT file, what a lean install (no TensorFlow) serves
    package_data={"facexpr.models": ["*.keras", "*.tflite", "*.json", "face-finder/*.tflite",
                                      "face-finder/*.txt", "face-finder/README.md"]},
    exclude_package_data={"facexpr.models": ["*.png"]},
)

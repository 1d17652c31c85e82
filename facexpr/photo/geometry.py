"""How a photo's face becomes the model's 48×48: the crop geometry, part of each model (its card).

Light on purpose (no OpenCV): the model card reads it, and `import facexpr` stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The crop geometry of models whose card predates alignment: they were served the Haar box.
LEGACY = "haar-box"


@dataclass(frozen=True)
class CropGeometry:
    """`fer-template`: a detector's eyes and mouth mapped onto FER2013's own (facexpr.photo.align),
    the template scaled by TEMPLATE_SCALE about the crop's centre; `haar-box`: the Haar box framed
    as rule 1 of benchmarks/SELECTION.md chose."""

    name: str = "fer-template"
    detector: str = "blazeface"
    template_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "detector": self.detector}
        if self.name == "fer-template":
            out["template_scale"] = self.template_scale
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CropGeometry:
        """A card's `crop` section (ValueError names what is wrong); none: the legacy Haar box."""
        if not data:
            return GEOMETRIES[LEGACY]
        if not isinstance(data, dict) or data.get("name") not in GEOMETRIES:
            raise ValueError(f"unknown crop geometry {data!r}; known: {', '.join(GEOMETRIES)}")
        default = GEOMETRIES[data["name"]]
        try:
            return cls(name=default.name, detector=str(data.get("detector", default.detector)),
                       template_scale=float(data.get("template_scale", default.template_scale)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"crop geometry {data!r}: {exc}") from exc

    def describe(self) -> str:
        if self.name == "fer-template":
            return f"eyes and mouth on the FER2013 template (×{self.template_scale:g}), {self.detector}"
        return f"Haar box framing, {self.detector}"


FER_TEMPLATE = CropGeometry()
HAAR_BOX = CropGeometry("haar-box", "haar", 1.0)
GEOMETRIES = {g.name: g for g in (FER_TEMPLATE, HAAR_BOX)}

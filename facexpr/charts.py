"""What the pages draw, built without Streamlit: the annotated photo and the confidence bars."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from facexpr.faces import Box
from facexpr.labels import EXPRESSIONS

BOX_COLOUR = (255, 64, 64)


def draw_faces(gray: np.ndarray, boxes: Sequence[Box]) -> Image.Image:
    """The gray image the model saw, in RGB so the face boxes and their numbers stand out."""
    img = Image.fromarray(gray).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 250))
    for i, b in enumerate(boxes):
        draw.rectangle([b.x, b.y, b.x + b.w - 1, b.y + b.h - 1], outline=BOX_COLOUR, width=width)
        if len(boxes) > 1:
            draw.text((b.x + width + 2, b.y + width + 2), str(i + 1), fill=BOX_COLOUR)
    return img


def probability_frame(probabilities: Sequence[float]) -> pd.DataFrame:
    probs = np.asarray(probabilities, dtype=float)
    top = int(np.argmax(probs))
    return pd.DataFrame({
        "expression": list(EXPRESSIONS),
        "confidence": probs,
        "predicted": [i == top for i in range(len(EXPRESSIONS))],
    })


def probability_chart(probabilities: Sequence[float]) -> alt.Chart:
    """Horizontal bars of all seven probabilities, FER2013 order, the predicted class highlighted."""
    frame = probability_frame(probabilities)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"),
                    title="confidence"),
            # labelOverlap off: Vega otherwise hides every other name at this height in Streamlit's theme
            y=alt.Y("expression:N", sort=list(EXPRESSIONS), title=None, axis=alt.Axis(labelOverlap=False)),
            color=alt.condition(alt.datum.predicted, alt.value("#e4572e"), alt.value("#9aa5b1")),
            tooltip=["expression", alt.Tooltip("confidence:Q", format=".1%")],
        )
        .properties(height=210)
    )

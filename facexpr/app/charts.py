"""What the pages draw, built without Streamlit: the annotated photo and the confidence bars."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from facexpr.core.labels import EXPRESSIONS
from facexpr.core.types import Box

BOX_COLOUR = (255, 64, 64)


def number_size(image_size: tuple[int, int]) -> int:
    """Font size of the face numbers: about 1/16 of the longer side (the page shows the image
    ~600 px wide, so ~35 px there), never under 14 px."""
    return max(14, round(max(image_size) / 16))


def draw_faces(gray: np.ndarray, boxes: Sequence[Box]) -> Image.Image:
    """The gray image the model saw, in RGB so the face boxes stand out; with several faces each
    gets its number (the page's "Face N") in white on a filled tag at the box's top-left corner."""
    img = Image.fromarray(gray).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 250))
    font = ImageFont.load_default(size=number_size(img.size))
    for i, b in enumerate(boxes):
        draw.rectangle([b.x, b.y, b.x + b.w - 1, b.y + b.h - 1], outline=BOX_COLOUR, width=width)
        if len(boxes) > 1:
            left, top, right, bottom = draw.textbbox((0, 0), str(i + 1), font=font)
            pad = max(2, (bottom - top) // 5)
            tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
            x0 = min(max(0, b.x), img.width - tag_w)
            y0 = b.y - tag_h if b.y - tag_h >= 0 else b.y  # above the box, or inside at the top edge
            draw.rectangle([x0, y0, x0 + tag_w, y0 + tag_h], fill=BOX_COLOUR)
            draw.text((x0 + pad - left, y0 + pad - top), str(i + 1), fill=(255, 255, 255), font=font)
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

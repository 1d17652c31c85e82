"""Batch: mixed good and bad files → rows, summary, CSV."""

import io

import pandas as pd

from facexpr.serve.batch import classify_files, results_table, summary, to_csv


def test_mixed_batch_keeps_going_and_lists_bad_files(tiny_classifier, astronaut_bytes, two_faces_bytes,
                                                     blank_photo_bytes):
    seen = []
    items = classify_files([("a.jpg", astronaut_bytes), ("junk.png", b"nope"), ("two.png", two_faces_bytes),
                            ("wall.png", blank_photo_bytes)], tiny_classifier,
                           on_progress=lambda n, name: seen.append((n, name)))
    assert seen[-1] == (4, "wall.png")
    table = results_table(items)
    assert list(table["file"]) == ["a.jpg", "junk.png", "two.png", "two.png", "wall.png"]
    assert "not an image" in table.loc[1, "error"] and table.loc[4, "error"] == "no face found"
    assert list(table["face"].dropna().astype(int)) == [1, 1, 2]
    assert summary(table)["faces"].sum() == 3

    text = to_csv(table).decode()
    assert text.splitlines()[1].split(",")[1] == "1"  # a whole face number, not 1.0
    csv = pd.read_csv(io.BytesIO(to_csv(table)))
    assert list(csv.columns[:6]) == ["file", "face", "expression", "confidence", "box", "error"]
    assert set(csv["model_version"].dropna()) == {tiny_classifier.version}
    assert csv["model_version"].isna().sum() == 1  # the unreadable file: no model answered
    assert pd.to_datetime(csv["classified_at"], utc=True).notna().all()
    assert csv.loc[1, "error"] == table.loc[1, "error"]  # the whole message
    assert len(csv) == 5 and csv.loc[0, "expression"] == table.loc[0, "expression"]
    probs = csv.loc[0, ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]]
    assert abs(probs.sum() - 1) < 1e-2


def test_batch_classifies_every_face_in_one_model_call_with_the_single_photo_answers(
        tiny_classifier, astronaut_bytes, two_faces_bytes, monkeypatch):
    from facexpr.model.predict import predict_image

    alone = [predict_image(data, tiny_classifier) for data in (astronaut_bytes, two_faces_bytes)]
    calls = []
    real = tiny_classifier.predict
    monkeypatch.setattr(tiny_classifier, "predict", lambda crops: calls.append(len(crops)) or real(crops))
    items = classify_files([("a.jpg", astronaut_bytes), ("two.png", two_faces_bytes)], tiny_classifier)
    assert calls == [3]  # 1 + 2 faces, one batched call
    for item, single in zip(items, alone, strict=True):
        for batched, face in zip(item.prediction.faces, single.faces, strict=True):
            assert batched.box == face.box and abs(batched.probabilities - face.probabilities).max() < 1e-4

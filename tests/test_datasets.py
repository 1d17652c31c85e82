"""Dataset commands: import-fer2013 (Kaggle CSV → layout), upload-dataset (layout → S3), and
training reading its data from S3 (a real S3 endpoint on loopback)."""

import numpy as np
from PIL import Image

from facexpr.cli import main
from facexpr.core.labels import EXPRESSIONS
from facexpr.learn.data import load_layout
from tests.layouts import ferplus_csv, make_layout, tiny_recipe


def fer_csv(path, rows) -> None:
    lines = ["emotion,pixels,Usage"]
    lines += [f"{e},{' '.join(str(v) for v in pixels.ravel())},{usage}" for e, pixels, usage in rows]
    path.write_text("\n".join(lines) + "\n")


def test_import_fer2013_writes_the_layout_with_row_numbers(tmp_path, capsys):
    a, b, c = (np.full((48, 48), v, np.uint8) for v in (10, 120, 250))
    fer_csv(tmp_path / "fer2013.csv", [(3, a, "Training"), (0, b, "PublicTest"), (6, c, "PrivateTest")])
    assert main(["import-fer2013", str(tmp_path / "fer2013.csv"), "--out", str(tmp_path / "fer")]) == 0
    assert "train: 1 images" in capsys.readouterr().out
    written = np.asarray(Image.open(tmp_path / "fer" / "val" / "angry" / "00001.png"))
    assert written.dtype == np.uint8 and (written == 120).all()
    assert (tmp_path / "fer" / "train" / "happy" / "00000.png").exists()
    assert (tmp_path / "fer" / "test" / "neutral" / "00002.png").exists()


def test_import_of_a_wrong_csv_says_so(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["import-fer2013", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "not Kaggle's fer2013.csv" in capsys.readouterr().err


def test_upload_then_train_from_s3(tmp_path, s3, capsys):
    make_layout(tmp_path / "fer" / "train", 3)
    make_layout(tmp_path / "fer" / "val", 1, seed=1)
    uri = f"s3://{s3.bucket}/fer2013"
    assert main(["upload-dataset", str(tmp_path / "fer"), "--to", uri]) == 0
    assert "uploaded 28 images" in capsys.readouterr().out
    assert len(s3.keys("fer2013/train/")) == 21 and "fer2013/val/sad/000.png" in s3.keys()
    assert load_layout(uri + "/train").counts() == dict.fromkeys(EXPRESSIONS, 3)

    from facexpr.learn.train import train
    from facexpr.storage.store import open_store

    ferplus_csv(tmp_path / "ferplus.csv", {1: {"surprise": 10}})
    open_store(uri).put("ferplus_labels.csv", (tmp_path / "ferplus.csv").read_bytes())
    card = train(uri, tmp_path / "models" / "s3", verbose=0,
                 recipe=tiny_recipe(ferplus=uri + "/ferplus_labels.csv", ferplus_weight=0.3))
    assert card.data["train"]["source"] == uri and card.val.n == 7
    assert card.data["ferplus"]["matched"] == 7  # row 1 (001.png) of every class, read from S3


def test_upload_to_a_missing_bucket_names_the_setting(tmp_path, s3, capsys):
    make_layout(tmp_path / "fer", 1)
    assert main(["upload-dataset", str(tmp_path / "fer"), "--to", "s3://no-such-bucket-fx/x"]) == 2
    assert "FACEXPR_S3_BUCKET" in capsys.readouterr().err

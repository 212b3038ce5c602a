"""What text and image sources make of a document or an image (no Ray needed)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import PIL.Image
from mlplatform.data.config import FieldSpec, SourceSpec
from mlplatform.data.contract import REASON
from mlplatform.data.ingest import _check
from mlplatform.data.sources.image import image_fields as _image_fields
from mlplatform.data.sources.text import text_fields as _text_fields


def png(level: int, size=(32, 24), mode="L") -> bytes:
    buf = io.BytesIO()
    PIL.Image.new(mode, size, level if mode == "L" else (level,) * 3).save(buf, format="PNG")
    return buf.getvalue()


def test_text_fields():
    out = _text_fields(pd.Series(["refund  please\n", "app\ncrash twice", ""]))
    assert out.to_dict("list") == {"chars": [15, 15, 0], "tokens": [2, 3, 0], "lines": [1, 2, 1]}


def test_image_fields_and_an_unreadable_image():
    grey = _image_fields(png(255))
    assert (grey["width"], grey["height"], grey["channels"]) == (32, 24, 1)
    assert grey["brightness"] == 1.0 and grey["contrast"] == 0.0 and grey[REASON] == ""
    assert _image_fields(png(0, mode="RGB"))["channels"] == 3
    assert _image_fields(png(0)[:40])[REASON].startswith("malformed file: unreadable image")
    assert _image_fields(b"not an image")[REASON].startswith("malformed file: unreadable image")


def test_keys_come_from_the_path_and_a_path_that_says_nobody_is_quarantined():
    source = SourceSpec(
        name="scans",
        format="image",
        path="/data/scans",
        path_fields=r"/(?P<kind>receipt|id)/(?P<entity_id>\d+)\.png$",
        fields={
            "entity_id": FieldSpec(type="int", min=1),
            "kind": FieldSpec(type="str"),
            "brightness": FieldSpec(type="float", max=0.9),
        },
    )
    batch = pd.DataFrame(
        {
            "bytes": [png(10), png(250), png(10), b"garbage"],
            "path": ["/data/scans/receipt/7.png", "/data/scans/id/8.png", "/data/scans/other/9.png", "/s/id/3.png"],
        }
    )
    out = _check(batch, source).to_pandas()
    assert out.loc[0, "entity_id"] == 7 and out.loc[0, "kind"] == "receipt" and out.loc[0, REASON] == ""
    assert out.loc[1, REASON].startswith("brightness: ") and "> max 0.9" in out.loc[1, REASON]
    assert "entity_id: missing" in out.loc[2, REASON]  # the path does not match: whose is it?
    assert out.loc[3, REASON].startswith("malformed file: unreadable image")
    assert out.loc[3, "__record"].startswith("{") and "NaN" not in out.loc[3, "__record"]
    assert np.array_equal(out["__file"], batch["path"])

"""Images in any format Pillow decodes, read as per-image fields; whose image it is comes from its path."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from mlplatform.data.contract import REASON
from mlplatform.data.sources import SourceKind, binary_table, register

#: What a model can use of an image without a vision model: size, channels, brightness and contrast.
IMAGE_FIELDS = ("width", "height", "channels", "brightness", "contrast")


def image_fields(data: bytes) -> dict[str, Any]:
    """Size, channels, mean brightness and contrast (std of the grey levels) on a 0..1 scale.

    A file Pillow cannot decode gets a reason instead, so it is quarantined as its own record.
    """
    import PIL.Image  # Pillow only where images are decoded (it also loads every codec plugin it finds)
    import PIL.ImageStat

    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img.load()
            grey = PIL.ImageStat.Stat(img.convert("L"))
            return {
                "width": img.width,
                "height": img.height,
                "channels": len(img.getbands()),
                "brightness": grey.mean[0] / 255,
                "contrast": grey.stddev[0] / 255,
                REASON: "",
            }
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        return {REASON: f"malformed file: unreadable image: {exc}"[:500]}


@register
class ImageKind(SourceKind):
    name = "image"
    file_fields = IMAGE_FIELDS

    def read(self, source: Any, paths: list[str]) -> Any:
        import ray.data

        return ray.data.read_binary_files(paths, include_paths=True)

    def read_file(self, fs: Any, path: str, source: Any) -> Any:
        return binary_table(fs, path)

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        # Decoded once, here: an unreadable image is quarantined as its record (the probe does not decode).
        return pd.DataFrame([image_fields(b) for b in batch["bytes"]], index=batch.index)

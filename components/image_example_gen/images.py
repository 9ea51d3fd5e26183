"""Checks one image file and turns it into a tf.Example (or a rejection)."""
from __future__ import annotations

import io

from PIL import Image
import tensorflow as tf

# Formats the Transform graph (tf.io.decode_image) reads as they are.
KEPT_AS_IS = {"JPEG", "PNG", "GIF"}
# Formats we accept but re-encode to PNG first: TF's BMP decoder misses
# compressed and low-bit-depth variants.
REENCODED = {"BMP"}
MIN_SIDE = 8          # a smaller "photo" is an icon or a broken header
MAX_ASPECT = 20       # wider than a panorama: squashed to a square it shows nothing
MAX_PIXELS = 200e6    # far beyond any camera; guards against decompression bombs


class RejectedImage(Exception):
  """The file is not an image the pipeline can use; str() is the reason."""


def _load(data: bytes) -> Image.Image:
  if not data:
    raise RejectedImage("empty file (0 bytes)")
  try:
    image = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as e:
    raise RejectedImage(f"absurd dimensions: {e}") from None
  except Exception:  # PIL raises several types for non-images
    raise RejectedImage("not an image (unrecognised file format)") from None
  if image.format not in KEPT_AS_IS | REENCODED:
    raise RejectedImage(
        f"unsupported format {image.format}; accepted: JPEG, PNG, GIF, BMP")
  width, height = image.size
  if min(width, height) < MIN_SIDE or width * height > MAX_PIXELS:
    raise RejectedImage(f"absurd dimensions {width}x{height}")
  if max(width, height) > MAX_ASPECT * min(width, height):
    raise RejectedImage(f"extreme aspect ratio {width}x{height} "
                        f"(more than {MAX_ASPECT}:1 cannot be resized to a square)")
  if image.format == "JPEG":
    # Decode at reduced DCT scale: still reads every byte (so truncation is
    # caught) at a fraction of the cost of a full decode.
    image.draft(image.mode, (width // 8, height // 8))
  try:
    image.load()
  except Exception as e:  # truncated or corrupt data
    raise RejectedImage(f"corrupt or truncated image data: {e}") from None
  return image


def prepare_image(data: bytes, max_side: int = 0) -> tuple[bytes, int, int, str]:
  """Returns (encoded bytes to store, height, width, original format).

  The original bytes are kept unless the image must be re-encoded: its
  longer side exceeds `max_side` (0 = never downscale), it is a BMP, or it
  is a CMYK JPEG (stored as RGB so every decoder agrees on its colours).
  """
  image = _load(data)
  fmt = image.format
  width, height = Image.open(io.BytesIO(data)).size  # draft() shrank `image`
  too_big = max_side and max(width, height) > max_side
  if too_big and min(width, height) * max_side / max(width, height) < MIN_SIDE:
    raise RejectedImage(f"{width}x{height} would shrink below {MIN_SIDE} px on its short side "
                        f"at data.max_image_side={max_side}")
  if not (too_big or fmt in REENCODED or image.mode == "CMYK"):
    return data, height, width, fmt
  image = Image.open(io.BytesIO(data))
  if image.mode not in ("RGB", "RGBA", "L", "LA"):
    image = image.convert("RGBA" if "A" in image.getbands() or
                          "transparency" in image.info else "RGB")
  if too_big:
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR,
                    reducing_gap=2.0)
  out = io.BytesIO()
  if fmt == "JPEG" and image.mode in ("RGB", "L"):
    image.save(out, "JPEG", quality=92)
  else:
    image.save(out, "PNG")
  return out.getvalue(), image.height, image.width, fmt


def typical_size(paths: list[str], smallest: int = 96, largest: int = 224) -> int:
  """A training size for these photos: their median short side, in steps of 32,
  between `smallest` and `largest`. Upscaling small photos adds no detail, only cost."""
  sides = []
  for path in paths:
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        sides.append(min(Image.open(f).size))  # reads the header only
    except Exception:  # noqa: BLE001  (ingestion reports the bad files; a sample skips them)
      continue
  if not sides:
    return largest
  median = sorted(sides)[len(sides) // 2]
  return max(smallest, min(largest, median // 32 * 32))


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(encoded: bytes, label: int, class_name: str,
                 relative_path: str, height: int, width: int,
                 fmt: str) -> tf.train.Example:
  return tf.train.Example(features=tf.train.Features(feature={
      "image_raw": _bytes(encoded),
      "label": _int(label),
      "class_name": _bytes(class_name.encode()),
      "path": _bytes(relative_path.encode()),
      "height": _int(height),
      "width": _int(width),
      "format": _bytes(fmt.encode()),
  }))

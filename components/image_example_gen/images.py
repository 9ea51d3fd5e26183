"""Checks one image file and turns it into a tf.Example (or a rejection)."""
from __future__ import annotations

import hashlib
import io
import re

from PIL import Image, ImageOps
import pillow_heif
import tensorflow as tf

pillow_heif.register_heif_opener()  # HEIC/HEIF, as iPhones save photos

# Formats the Transform graph (tf.io.decode_image) reads as they are.
KEPT_AS_IS = {"JPEG", "PNG", "GIF"}
# Formats we accept but re-encode to PNG first: TF's BMP decoder misses
# compressed and low-bit-depth variants.
REENCODED = {"BMP"}
# Formats TF cannot decode at all: converted to JPEG (HEIF, lossy already) or
# PNG, and recorded as what they became, so the schema's format domain (the
# four above) accepts them unchanged. Multi-frame files give their first frame.
CONVERTED = {"HEIF", "WEBP", "TIFF"}
ACCEPTED = "JPEG, PNG, GIF, BMP, HEIC/HEIF, WebP, TIFF"
ORIENTATION = 0x0112  # EXIF tag; TF's decoders ignore it
MIN_SIDE = 8          # a smaller "photo" is an icon or a broken header
MAX_ASPECT = 20       # wider than a panorama: squashed to a square it shows nothing
# Far beyond any camera (108 MP phones are 12000x9000), and what Pillow itself
# refuses to open: a tiny file can declare 20000x20000 and decode to gigabytes.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


class RejectedImage(Exception):
  """The file is not an image the pipeline can use; str() is the reason."""


def _too_many_pixels(pixels: int) -> RejectedImage:
  return RejectedImage(f"absurd dimensions: {pixels / 1e6:.0f} megapixels, more than "
                       f"{MAX_PIXELS / 1e6:.0f} (a decompression bomb?)")


def acceptable_image(data: bytes) -> Image.Image:
  """The opened (not yet decoded) image if it is one the pipeline takes, else
  RejectedImage saying why: empty, not an image, an unsupported format,
  absurd dimensions (decompression bombs included) or an extreme aspect ratio.

  The one rule for every photo, ingested or sent to `finetune predict`: only
  the header is read, so a bomb is refused before any pixel is decoded.
  """
  if not data:
    raise RejectedImage("empty file (0 bytes)")
  try:
    image = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as e:
    # Pillow refuses before we see the size; its message carries the pixel count.
    found = re.search(r"\((\d+) pixels\)", str(e))
    raise (_too_many_pixels(int(found.group(1))) if found
           else RejectedImage(f"absurd dimensions: {e}")) from None
  except Exception:  # PIL raises several types for non-images
    raise RejectedImage("not an image (unrecognised file format)") from None
  if image.format not in KEPT_AS_IS | REENCODED | CONVERTED:
    raise RejectedImage(f"unsupported format {image.format}; accepted: {ACCEPTED}")
  width, height = image.size
  if width * height > MAX_PIXELS:
    raise _too_many_pixels(width * height)
  if min(width, height) < MIN_SIDE:
    raise RejectedImage(f"absurd dimensions {width}x{height}")
  if max(width, height) > MAX_ASPECT * min(width, height):
    raise RejectedImage(f"extreme aspect ratio {width}x{height} "
                        f"(more than {MAX_ASPECT}:1 cannot be resized to a square)")
  return image


def _load(data: bytes) -> Image.Image:
  image = acceptable_image(data)
  width, height = image.size
  if image.format == "JPEG":
    # Decode at reduced DCT scale: still reads every byte (so truncation is
    # caught) at a fraction of the cost of a full decode.
    image.draft(image.mode, (width // 8, height // 8))
  try:
    image.load()
  except Exception as e:  # truncated or corrupt data
    raise RejectedImage(f"corrupt or truncated image data: {e}") from None
  return image


def _turned(image: Image.Image) -> bool:
  """Whether its EXIF orientation says the pixels are not stored upright (2..8)."""
  try:
    return image.getexif().get(ORIENTATION, 1) in range(2, 9)
  except Exception:  # noqa: BLE001  (unreadable EXIF: the pixels are still fine)
    return False


def _upright(image: Image.Image) -> Image.Image:
  """The image as the camera meant it to be seen. The TIFF and HEIF loaders
  apply the orientation themselves and clear the tag, so it is never applied twice."""
  return ImageOps.exif_transpose(image) if _turned(image) else image


def _converted(image: Image.Image, max_side: int = 0) -> Image.Image:
  """Upright, in a mode JPEG or PNG stores, its longer side at most `max_side` (0 = any)."""
  image = _upright(image)
  if image.mode not in ("RGB", "RGBA", "L", "LA"):
    image = image.convert("RGBA" if "A" in image.getbands() or
                          "transparency" in image.info else "RGB")
  if max_side and max(image.size) > max_side:
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
  return image


def _encode(image: Image.Image, fmt: str) -> tuple[bytes, str]:
  """(bytes, format) of `image`: JPEG if it came as a lossy photo, else PNG."""
  out = io.BytesIO()
  stored = "JPEG" if fmt in ("JPEG", "HEIF") and image.mode in ("RGB", "L") else "PNG"
  image.save(out, stored, **({"quality": 92} if stored == "JPEG" else {}))
  return out.getvalue(), stored


def prepare_image(data: bytes, max_side: int = 0) -> tuple[bytes, int, int, str]:
  """Returns (encoded bytes to store, height, width, format to record).

  The original bytes are kept unless the image must be re-encoded: its
  longer side exceeds `max_side` (0 = never downscale), it is a BMP, HEIF,
  WebP or TIFF, a CMYK JPEG (stored as RGB so every decoder agrees on its
  colours), or its EXIF orientation is not normal (stored upright).
  The format recorded is the original one, except for CONVERTED formats.
  """
  image = _load(data)
  fmt = image.format
  width, height = Image.open(io.BytesIO(data)).size  # draft() shrank `image`
  too_big = max_side and max(width, height) > max_side
  if too_big and min(width, height) * max_side / max(width, height) < MIN_SIDE:
    raise RejectedImage(f"{width}x{height} would shrink below {MIN_SIDE} px on its short side "
                        f"at data.max_image_side={max_side}")
  if not (too_big or fmt in REENCODED | CONVERTED or image.mode == "CMYK"
          or _turned(image)):
    return data, height, width, fmt
  if fmt == "JPEG":  # decode again in full, not at draft() scale
    image = Image.open(io.BytesIO(data))
  try:
    image = _converted(image, max_side)
    encoded, stored = _encode(image, fmt)
  except (OSError, ValueError) as e:  # e.g. a pixel mode Pillow cannot convert
    raise RejectedImage(f"cannot convert this {fmt} image ({image.mode}): {e}") from None
  return encoded, image.height, image.width, stored if fmt in CONVERTED else fmt


def photo_digest(data: bytes) -> str:
  """The same photo whatever its file: sha256 of its decoded pixels (JPEG at the
  reduced scale ingestion decodes it), so a copy with other metadata or saved
  again losslessly is found too. `data` must have passed prepare_image."""
  image = _load(data)
  return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def upright_bytes(data: bytes) -> bytes:
  """`data` as the served graph should get it (`finetune predict`): unchanged,
  unless it is HEIF, WebP or TIFF or its EXIF orientation is not normal; then
  re-encoded upright as ingestion stores it.

  Raises RejectedImage, with ingestion's reason, for a file ingestion would
  refuse before decoding it (a decompression bomb, absurd dimensions, not an
  image). A truncated photo passes: the served graph reports it.
  """
  image = acceptable_image(data)
  try:
    if image.format in CONVERTED or (image.format in KEPT_AS_IS | REENCODED
                                     and _turned(image)):
      return _encode(_converted(image), image.format)[0]
  except Exception:  # noqa: BLE001  (corrupt pixel data: the signature's error says so)
    pass
  return data


def typical_size(paths: list[str], smallest: int = 96, largest: int = 256) -> int:
  """A training size for these photos: their median short side, in steps of 32,
  between `smallest` and `largest`. Upscaling small photos adds no detail, only cost.

  The cap is above the ImageNet weights' 224 px: a model pretrained on random
  crops sees objects larger than a whole photo shows them, so larger photos do
  better a little above 224. On cats vs dogs (median short side 363 px), 256 px
  against 224 in 5-fold cross-validation on the 2,500 training and validation
  photos: 31 vs 38 wrong, log loss 0.039 vs 0.046, at 1.3x the compute.
  """
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

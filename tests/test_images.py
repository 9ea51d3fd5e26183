"""Which files become examples, and why the others are rejected."""
import io

from PIL import Image
import pytest
import tensorflow as tf

from components.image_example_gen.images import RejectedImage, prepare_image
from components.transform import decode_and_resize
from conftest import image_bytes


def _encode(image, fmt, **kwargs):
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


RGB = Image.open(io.BytesIO(image_bytes((200, 60, 50), size=(50, 40))))
VALID = {
    "rgb jpeg": _encode(RGB, "JPEG"),
    "grayscale jpeg": _encode(RGB.convert("L"), "JPEG"),
    "cmyk jpeg": _encode(RGB.convert("CMYK"), "JPEG"),
    "palette png": _encode(RGB.convert("P"), "PNG"),
    "rgba png": _encode(RGB.convert("RGBA"), "PNG"),
    "gif": _encode(RGB.convert("P"), "GIF"),
    "animated gif": _encode(RGB.convert("P"), "GIF", save_all=True,
                            append_images=[RGB.rotate(90).convert("P")]),
    "bmp": _encode(RGB, "BMP"),
    "1-bit bmp": _encode(RGB.convert("1"), "BMP"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_formats_are_kept_and_decode_in_the_transform_graph(name):
  encoded, height, width, _ = prepare_image(VALID[name])
  assert (height, width) == (40, 50)
  pixels = decode_and_resize(tf.constant([encoded]), 16)
  assert pixels.shape == (1, 16, 16, 3)
  if name != "1-bit bmp":  # thresholded to black/white: colour is gone
    red, _, blue = tf.reduce_mean(pixels, axis=[0, 1, 2]).numpy()
    assert red > blue or name.startswith("grayscale") or name == "cmyk jpeg"


def test_jpeg_pixels_are_the_ones_other_decoders_see():
  # A detailed photo-like JPEG: TensorFlow's default (fast) DCT is off by up
  # to several levels here; the Transform graph decodes as Pillow does.
  import numpy as np
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  encoded = _encode(Image.fromarray(noise).resize((96, 96)), "JPEG", quality=90)
  pillow = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), dtype=np.float32)
  ours = decode_and_resize(tf.constant([encoded]), 96)[0].numpy()
  fast = tf.io.decode_jpeg(encoded, channels=3).numpy().astype(np.float32)
  assert np.abs(ours - pillow).max() <= 1
  assert np.abs(fast - pillow).max() > 1


def test_original_bytes_are_kept_when_no_reencoding_is_needed():
  assert prepare_image(VALID["rgb jpeg"])[0] == VALID["rgb jpeg"]
  assert prepare_image(VALID["rgba png"])[0] == VALID["rgba png"]


def test_large_images_are_downscaled_to_the_maximum_side():
  big = _encode(Image.new("RGB", (1200, 600), (10, 200, 10)), "JPEG")
  encoded, height, width, fmt = prepare_image(big, max_side=300)
  assert (height, width, fmt) == (150, 300, "JPEG")
  assert Image.open(io.BytesIO(encoded)).size == (300, 150)
  assert prepare_image(big, max_side=0)[0] == big


JPEG = VALID["rgb jpeg"]
BAD = {
    "empty": (b"", "empty file"),
    "text": (b"hello, I am not a photo", "not an image"),
    "truncated": (JPEG[: len(JPEG) // 2], "truncated"),
    "ppm": (_encode(RGB, "PPM"), "unsupported format PPM"),
    "absurd width": (_encode(Image.new("L", (30000, 1)), "PNG"), "absurd dimensions 30000x1"),
    "tiny": (_encode(Image.new("RGB", (3, 3)), "PNG"), "absurd dimensions 3x3"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_rejected_with_a_reason(name):
  data, reason = BAD[name]
  with pytest.raises(RejectedImage, match=reason):
    prepare_image(data)


def test_the_automatic_training_size_follows_the_photos(tmp_path):
  from components.image_example_gen.images import typical_size
  from conftest import image_bytes

  def photos(name, *sizes):
    paths = []
    for i, size in enumerate(sizes):
      path = tmp_path / f"{name}{i}.jpg"
      path.write_bytes(image_bytes((90, 90, 90), size=size))
      paths.append(str(path))
    return paths

  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not an image")
  assert typical_size(photos("thumb", *[(128, 128)] * 3) + [str(broken)]) == 128  # no upscaling
  assert typical_size(photos("phone", (800, 600), (640, 480), (400, 300))) == 256  # capped
  assert typical_size(photos("web", (500, 375), (320, 240), (300, 240))) == 224
  assert typical_size(photos("tiny", (50, 40), (40, 40))) == 96  # a floor for the base
  assert typical_size(photos("mixed", (200, 150), (180, 170), (300, 300))) == 160  # median, /32


def bomb_png(side: int = 20000) -> bytes:
  """A decompression bomb: 20000x20000 declared in a few dozen KB (1 bit per
  pixel, all zero), gigabytes once decoded to RGB."""
  return _encode(Image.new("1", (side, side)), "PNG", optimize=True)


def test_a_decompression_bomb_is_refused_from_its_header_alone():
  from components.image_example_gen.images import acceptable_image, upright_bytes
  bomb = bomb_png()
  assert len(bomb) < 100_000
  reasons = []
  for check in (prepare_image, upright_bytes, acceptable_image):  # ingestion, predict, the rule
    with pytest.raises(RejectedImage) as refused:
      check(bomb)
    reasons.append(str(refused.value))
  assert reasons[0] == reasons[1] == reasons[2]
  assert reasons[0] == ("absurd dimensions: 400 megapixels, more than 179 "
                        "(a decompression bomb?)")


def test_huge_but_real_photos_pass_and_other_shapes_are_refused_alike():
  from components.image_example_gen.images import acceptable_image, upright_bytes
  # 169 MP, beyond any camera's 108 MP: accepted (and downscaled at ingestion).
  with pytest.warns(Image.DecompressionBombWarning):  # Pillow only warns up to twice its limit
    assert acceptable_image(bomb_png(13000)).size == (13000, 13000)
  strip = _encode(Image.new("L", (4000, 100)), "PNG")
  for check in (prepare_image, upright_bytes):
    with pytest.raises(RejectedImage, match=r"^extreme aspect ratio 4000x100 \(more than 20:1"):
      check(strip)

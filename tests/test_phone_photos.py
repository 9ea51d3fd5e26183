"""Phone photos: EXIF orientation applied, HEIC, WebP and TIFF accepted, at
ingestion and in `finetune predict`. Pixels are checked with TF's decoder,
which ignores EXIF, as the Transform graph and TF Serving do."""
import io
import json

from click.testing import CliRunner
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from components.image_example_gen.images import prepare_image, upright_bytes
from conftest import CATS_VS_DOGS_SCHEMA, CLASS_COLORS, image_bytes, make_dataset

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

T = Image.Transpose
# Four flat quadrants of distinct colours on a 48x32 image: each of the 8
# orientations puts them elsewhere, and a quarter turn changes the shape.
REFERENCE = np.zeros((32, 48, 3), np.uint8)
REFERENCE[:16, :24], REFERENCE[:16, 24:] = (220, 30, 30), (30, 200, 30)
REFERENCE[16:, :24], REFERENCE[16:, 24:] = (30, 30, 220), (240, 240, 240)
# How a camera stores the pixels for each EXIF orientation: the inverse of
# what the tag tells a viewer to do (flips and transposes are their own inverse).
STORED = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
          5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}
NEW_FORMATS = {"heic": ("HEIF", "JPEG"), "webp": ("WEBP", "PNG"), "tiff": ("TIFF", "PNG")}


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


def _photo(orientation: int, fmt: str = "JPEG") -> bytes:
  """The reference as a camera held that way writes it: turned pixels, EXIF tag."""
  image = Image.fromarray(REFERENCE)
  if STORED[orientation] is not None:  # FLIP_LEFT_RIGHT is 0
    image = image.transpose(STORED[orientation])
  exif = Image.Exif()
  exif[0x0112] = orientation
  return _encode(image, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def _assert_upright(encoded: bytes):
  pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
  assert pixels.shape == REFERENCE.shape
  # JPEG blurs the quadrant edges a little; a wrong orientation is off by ~100.
  assert np.abs(pixels.astype(int) - REFERENCE).mean() < 8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_stored_upright(orientation):
  data = _photo(orientation)
  encoded, height, width, fmt = prepare_image(data)
  _assert_upright(encoded)
  assert (height, width, fmt) == (32, 48, "JPEG")
  assert (encoded == data) == (orientation == 1)  # only turned photos are re-encoded


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_reaches_the_signature_upright(orientation, tmp_path):
  from pipeline.cli.predict import predict_files
  seen = []

  def signature(image_bytes):  # records what the served graph would get
    seen.extend(image_bytes.numpy())
    n = len(image_bytes.numpy())
    return {"class_names": tf.constant([[b"a", b"b"]] * n),
            "probabilities": tf.constant([[0.5, 0.5]] * n)}

  path = tmp_path / "photo.jpg"
  path.write_bytes(_photo(orientation))
  (result,) = predict_files(signature, [path])
  assert "error" not in result
  _assert_upright(seen[0])
  assert (seen[0] == path.read_bytes()) == (orientation == 1)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "HEIF"])
def test_orientation_in_other_formats_is_applied_once(fmt):
  """Pillow's TIFF and pillow-heif's loaders turn the image themselves."""
  for orientation in (3, 6):
    _assert_upright(prepare_image(_photo(orientation, fmt))[0])
    _assert_upright(upright_bytes(_photo(orientation, fmt)))


@pytest.mark.parametrize("ext", sorted(NEW_FORMATS))
def test_new_formats_are_converted_to_a_format_the_schema_accepts(ext):
  fmt, stored = NEW_FORMATS[ext]
  red = Image.new("RGB", (40, 30), CLASS_COLORS["cats"])
  blue = Image.new("RGB", (40, 30), CLASS_COLORS["dogs"])
  # Multi-frame files (a burst, an animation, a multi-page scan) give their first frame.
  for data in (_encode(red, fmt), _encode(red, fmt, save_all=True, append_images=[blue])):
    encoded, height, width, recorded = prepare_image(data)
    assert (height, width, recorded) == (30, 40, stored)
    pixels = tf.io.decode_image(encoded, channels=3).numpy()
    red_, _, blue_ = pixels.reshape(-1, 3).mean(axis=0)
    assert red_ > 150 > blue_
  if fmt != "HEIF":  # with an alpha channel: PNG, to keep it
    assert prepare_image(_encode(red.convert("RGBA"), fmt))[3] == "PNG"


def _schema_formats() -> set[str]:
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = text_format.Parse(CATS_VS_DOGS_SCHEMA.read_text(), schema_pb2.Schema())
  (domain,) = [d for d in schema.string_domain if d.name == "format"]
  return set(domain.value)


def test_phone_photos_are_ingested_upright_within_the_schema(tmp_path):
  from test_ingestion import ingest
  root = make_dataset(tmp_path / "photos", {"all": 3}, splits=False)
  for seed, name in enumerate(("cats", "dogs"), start=201):
    image = Image.open(io.BytesIO(image_bytes(CLASS_COLORS[name], seed=seed)))
    for ext, (fmt, _) in NEW_FORMATS.items():
      (root / name / f"phone.{ext}").write_bytes(_encode(image, fmt))
  (root / "cats" / "sideways.jpg").write_bytes(_photo(6))

  report, records, _ = ingest(root, tmp_path / "out")

  assert report["num_rejected"] == 0, report["rejected"]
  by_path = {r["path"].numpy().decode(): r for split in records.values() for r in split}
  assert len(by_path) == 6 + 6 + 1
  assert {r["format"].numpy().decode() for r in by_path.values()} <= _schema_formats()
  for ext, (_, stored) in NEW_FORMATS.items():
    assert by_path[f"dogs/phone.{ext}"]["format"].numpy().decode() == stored
  _assert_upright(by_path["cats/sideways.jpg"]["image_raw"].numpy())
  sideways = by_path["cats/sideways.jpg"]
  assert (sideways["height"].numpy(), sideways["width"].numpy()) == (32, 48)


def test_phone_photos_are_predicted(tiny_run, tmp_path):
  from pipeline.cli import main
  config, _ = tiny_run
  image = Image.open(io.BytesIO(image_bytes(CLASS_COLORS["dogs"], seed=104)))
  paths = {"png": tmp_path / "dog.png"}
  paths["png"].write_bytes(_encode(image, "PNG"))
  for ext, (fmt, _) in NEW_FORMATS.items():
    paths[ext] = tmp_path / f"dog.{ext}"
    paths[ext].write_bytes(_encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
  # The same dog stored sideways, as a phone held in portrait writes it.
  exif = Image.Exif()
  exif[0x0112] = 6
  paths["sideways"] = tmp_path / "sideways.png"
  paths["sideways"].write_bytes(_encode(image.transpose(T.ROTATE_90), "PNG", exif=exif.tobytes()))

  result = CliRunner().invoke(main, ["predict", *map(str, paths.values()), "--json",
                                     "--outputs", config.output_dir,
                                     "--pipeline-name", config.pipeline_name])
  assert result.exit_code == 0, result.output
  predicted = dict(zip(paths, json.loads(result.stdout)))
  for item in predicted.values():
    assert set(item["probabilities"]) == {"cats", "dogs"}
  # Lossless: the same pixels as the PNG reach the model, so the same numbers.
  for name in ("tiff", "webp", "sideways"):
    assert predicted[name]["probabilities"] == pytest.approx(
        predicted["png"]["probabilities"], abs=1e-6), name
  assert predicted["heic"]["probabilities"] == pytest.approx(
      predicted["png"]["probabilities"], abs=0.05)

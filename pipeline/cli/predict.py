"""`finetune predict`: classify image files with a pushed model.

The files go through the SavedModel's `predict_images` signature as raw bytes,
exactly what a TF Serving REST client sends as {"b64": ...}, so this checks
the model that is served, Transform graph included.
"""
from __future__ import annotations

import json
import os
import pathlib
import posixpath

import click

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from pipeline import storage
from pipeline.cli.options import VERBOSE
from pipeline.cli.console import quiet
from pipeline.config import ConfigError, recorded_config

# Same names as components.trainer.signatures, which imports TensorFlow.
IMAGES_SIGNATURE = "predict_images"
IMAGES_INPUT = "image_bytes"
BATCH_SIZE = 32  # files per signature call; bounds memory for long file lists
NOT_AN_IMAGE = "not a decodable image (JPEG, PNG, GIF, BMP, HEIC/HEIF, WebP or TIFF expected)"


class ModelNotFoundError(Exception):
  """No SavedModel where one was expected; the message says what to do."""


def resolve_model_dir(path: str | os.PathLike, version: int | None = None) -> str:
  """A SavedModel folder, or a model base folder's highest (or given) version.

  Local paths and bucket URIs (gs://, s3://) alike, as TF Serving reads them.
  """
  from components.serving import served_versions
  import tensorflow as tf
  path = os.fspath(path).rstrip("/")
  if tf.io.gfile.exists(posixpath.join(path, "saved_model.pb")):
    if version is not None:
      raise ModelNotFoundError(f"{path} is a SavedModel itself; --version needs the folder "
                               "holding the numeric version folders")
    return path
  versions = served_versions(path)
  if not versions:
    raise ModelNotFoundError(f"no model versions in {path} (numeric folders holding "
                             "saved_model.pb); run `finetune run` first to train and push one")
  if version is None:
    return versions[max(versions)]
  if version not in versions:
    raise ModelNotFoundError(f"no version {version} in {path}; available: "
                             f"{', '.join(map(str, sorted(versions)))}")
  return versions[version]


class OnDeviceModel:
  """A pushed version's `model.tflite` (serving.tflite) behind the signature's
  interface: photos decoded and resized as the Transform graph does, the
  classes and size from the model card beside it in `assets.extra/`."""

  def __init__(self, path: str):
    import tensorflow as tf
    card = posixpath.join(posixpath.dirname(path), "model_card.json")
    if not tf.io.gfile.exists(path) or not tf.io.gfile.exists(card):
      raise ModelNotFoundError(f"{path} and the model_card.json beside it are needed (a pushed "
                               "version's assets.extra/ holds both)")
    with tf.io.gfile.GFile(card) as f:
      facts = json.load(f)
    self.path, self.class_names, self.image_size = path, facts["classes"], facts["image_size"]

  def __call__(self, **inputs):
    import tensorflow as tf
    from components.trainer.tflite import predict_pixels
    from components.transform import decode_and_resize
    pixels = decode_and_resize(inputs[IMAGES_INPUT], self.image_size).numpy()
    probabilities = predict_pixels(self.path, pixels)
    return {"probabilities": tf.constant(probabilities),
            "class_names": tf.constant([self.class_names] * len(probabilities))}


def load_serving_model(path: str | os.PathLike, version: int | None = None):
  """The `predict_images` signature of the SavedModel at `path` (see resolve_model_dir),
  or a `.tflite` model's stand-in for it."""
  import tensorflow as tf
  if os.fspath(path).endswith(".tflite"):
    return OnDeviceModel(os.fspath(path))
  loaded = tf.saved_model.load(resolve_model_dir(path, version))
  signature = loaded.signatures[IMAGES_SIGNATURE]
  # The signature does not own the model's variables: keep the model alive with it.
  signature.loaded_model = loaded
  return signature


def _read(path: str) -> bytes | str:
  """The file's bytes as the signature needs them, or why it cannot be read.

  The served graph decodes JPEG, PNG, GIF and BMP and ignores EXIF: HEIC, WebP
  and TIFF files, and photos whose EXIF orientation is not normal, are
  re-encoded upright first, as ingestion stored the training photos. A file
  ingestion would refuse (a decompression bomb, absurd dimensions, not an
  image) is refused here for the same reason, before any pixel is decoded.
  """
  from components.image_example_gen.images import RejectedImage, upright_bytes
  try:
    return upright_bytes(pathlib.Path(path).read_bytes())
  except RejectedImage as e:
    return f"refused: {e}"
  except FileNotFoundError:
    return "no such file"
  except IsADirectoryError:
    return "is a directory"
  except OSError as e:
    return e.strerror or str(e)


def _run(signature, contents: list[bytes]) -> list[dict]:
  import tensorflow as tf
  outputs = signature(**{IMAGES_INPUT: tf.constant(contents)})
  results = []
  for names, probabilities in zip(outputs["class_names"].numpy(),
                                  outputs["probabilities"].numpy()):
    by_class = {n.decode(): float(p) for n, p in zip(names, probabilities)}
    best = max(by_class, key=by_class.get)
    results.append({"predicted_class": best, "probability": by_class[best],
                    "probabilities": by_class})
  return results


def predict_files(signature, paths) -> list[dict]:
  """One dict per path, in order: the prediction, or {"path", "error"}.

  Files are predicted in batches; a batch that fails (one file is not an
  image) is retried file by file, so a bad file only fails itself.
  """
  import tensorflow as tf
  paths = [str(p) for p in paths]
  results: list[dict] = [{"path": p} for p in paths]
  readable = []
  for result, path in zip(results, paths):
    content = _read(path)
    if isinstance(content, str):
      result["error"] = content
    else:
      readable.append((result, content))
  for start in range(0, len(readable), BATCH_SIZE):
    batch = readable[start:start + BATCH_SIZE]
    try:
      for (result, _), prediction in zip(batch, _run(signature, [c for _, c in batch])):
        result.update(prediction)
    except tf.errors.InvalidArgumentError:
      for result, content in batch:
        try:
          result.update(_run(signature, [content])[0])
        except tf.errors.InvalidArgumentError:
          result["error"] = NOT_AN_IMAGE
  return results


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_dir", type=click.Path(),
              help="Model base folder (numeric version folders), a SavedModel folder, or a "
                   "pushed version's assets.extra/model.tflite. Default: the pushed model, "
                   "<serving dir>/<model name>.")
@click.option("--version", type=int, help="Model version to use (default: the highest).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
@click.option("--config", "config_path", type=click.Path(),
              help="YAML configuration file (locates the default model).")
@click.option("--outputs", "output_dir",
              help="The output folder `finetune run` used (locates the default model).")
@click.option("--pipeline-name", help="Pipeline name (locates the default model).")
@VERBOSE
def predict(images, model_dir, version, as_json, config_path, output_dir, pipeline_name,
            verbose):
  """Classify IMAGE files with a pushed model, as TF Serving would.

  Prints `path  predicted_class  probability` per image. Files that cannot be
  read or decoded are reported on stderr; the exit code is then 1.
  """
  if model_dir is None:
    try:
      config = recorded_config(config_path, output_dir, pipeline_name)
    except ConfigError as e:
      raise click.ClickException(str(e))
    model_dir = posixpath.join(config.serving_dir, config.model_name)
  if storage.uses_s3(model_dir):
    storage.enable_s3()
  with quiet(verbose) as console:
    try:
      signature = load_serving_model(model_dir, version)
    except ModelNotFoundError as e:
      raise click.ClickException(str(e))
    results = predict_files(signature, images)
    for result in results:
      if "error" in result:
        console.echo(f"error: {result['path']}: {result['error']}", err=True)
    if as_json:
      console.echo(json.dumps(results, indent=2))
    else:
      for result in results:
        if "error" not in result:
          console.echo(f"{result['path']}  {result['predicted_class']}  "
                       f"{result['probability']:.4f}")
  if any("error" in result for result in results):
    raise SystemExit(1)

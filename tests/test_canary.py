"""The canary (components/canary.py): the pushed tiny model answers TF Serving's
REST and gRPC request contracts in a fresh process and carries warm-up
requests; broken SavedModels are refused with one clear line."""
from __future__ import annotations

import os
import pathlib
import shutil

from conftest import CLASS_COLORS, image_bytes
import numpy as np
import pytest
import tensorflow as tf

from components.canary import WARMUP_FILE, CanaryError, check_servable

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

CLASSES = ["cats", "dogs"]


def _write_split(folder: pathlib.Path, photos: int = 4) -> str:
  """A split as ImageExampleGen writes it: GZIP TFRecords of tf.Examples."""
  folder.mkdir(parents=True)
  with tf.io.TFRecordWriter(str(folder / "data_tfrecord-00000-of-00001.gz"),
                            tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
    for i in range(photos):
      label = i % 2
      features = {
          "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[
              image_bytes(CLASS_COLORS[CLASSES[label]], seed=500 + i)])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
          "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{i}.jpg".encode()])),
      }
      writer.write(tf.train.Example(
          features=tf.train.Features(feature=features)).SerializeToString())
  return str(folder)


def _fake_model(export_dir: pathlib.Path, probabilities, signature: str = "serving_default"):
  """A SavedModel with the served outputs, answering fixed `probabilities`."""
  names = tf.constant(CLASSES)
  row = tf.constant([probabilities], tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(examples):
    batch = tf.shape(examples)[0]
    p = tf.tile(row, [batch, 1])
    return {"probabilities": p, "class_names": tf.tile(names[tf.newaxis], [batch, 1]),
            "predicted_class": tf.gather(names, tf.argmax(p, axis=1))}

  tf.saved_model.save(tf.Module(), str(export_dir), signatures={signature: serve})
  return str(export_dir)


@pytest.fixture(scope="module")
def pushed(tiny_run, tmp_path_factory):
  """A copy of the tiny run's pushed version (the fixture's folder stays
  untouched) and the run's test split."""
  config, run = tiny_run
  base = pathlib.Path(config.serving_dir) / config.model_name
  (version,) = [p for p in base.iterdir() if p.name.isdigit()]
  copy = tmp_path_factory.mktemp("canary") / version.name
  shutil.copytree(version, copy)
  split = os.path.join(run.artifact("ImageExampleGen", "examples").uri, "Split-test")
  return str(copy), split


def test_pushed_model_is_servable_and_carries_replayable_warmup(pushed, fresh_canary,
                                                              record_property):
  from tensorflow_serving.apis import prediction_log_pb2
  version, split = pushed
  result = check_servable(version, split, warmup_dir=version, count=8, model_name="cats-vs-dogs")
  record_property("canary_seconds", result["seconds"])
  assert result["classes"] == CLASSES
  assert result["photos"] == 8  # the tiny test split has 4 cats and 4 dogs
  assert result["requests"] == ["REST serving_default", "REST predict_images",
                                "gRPC serving_default"]
  assert result["warmup_file"] == os.path.join(version, WARMUP_FILE)
  assert result["warmup_requests"] == 4

  # The warm-up file as TF Serving reads it, replayed through the signature here too.
  serve = tf.saved_model.load(version).signatures["serving_default"]
  records = list(tf.data.TFRecordDataset(result["warmup_file"]))
  assert len(records) == 4
  for record in records:
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    assert log.WhichOneof("log_type") == "predict_log"
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.name == "cats-vs-dogs"
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    assert list(inputs) == ["examples"] and inputs["examples"].shape == (1,)
    example = tf.train.Example.FromString(inputs["examples"][0])
    assert set(example.features.feature) == {"image_raw"}  # no labels or paths shipped
    outputs = serve(**inputs)
    assert np.sum(outputs["probabilities"].numpy()) == pytest.approx(1.0, abs=1e-5)
    assert outputs["predicted_class"].numpy()[0].decode() in CLASSES


def test_probabilities_that_do_not_sum_to_one_are_refused(tmp_path):
  split = _write_split(tmp_path / "Split-test")
  model = _fake_model(tmp_path / "model", [0.3, 0.3])
  with pytest.raises(CanaryError) as raised:
    check_servable(model, split, count=2)
  message = str(raised.value)
  assert "\n" not in message
  assert "REST serving_default photo 0: probabilities [0.3, 0.3] sum to 0.6000, not 1" in message


def test_a_model_without_serving_default_is_refused(tmp_path):
  split = _write_split(tmp_path / "Split-test")
  model = _fake_model(tmp_path / "model", [0.4, 0.6], signature="predict_images")
  with pytest.raises(CanaryError, match=r"^canary: no signature 'serving_default' "
                                        r"\(the SavedModel has \['predict_images'\]\)$"):
    check_servable(model, split, warmup_dir=str(tmp_path / "model"))


def test_a_good_fake_model_passes_and_nothing_loads_from_an_empty_folder(tmp_path):
  split = _write_split(tmp_path / "Split-test")
  model = _fake_model(tmp_path / "model", [0.25, 0.75])
  result = check_servable(model, split, count=3)
  assert result["photos"] == 3 and result["warmup_file"] is None
  assert result["requests"] == ["REST serving_default", "gRPC serving_default"]

  (tmp_path / "empty").mkdir()
  with pytest.raises(CanaryError, match="^canary: the SavedModel does not load: "):
    check_servable(str(tmp_path / "empty"), split)
  with pytest.raises(CanaryError, match="^canary: no test examples under "):
    check_servable(model, str(tmp_path))


def test_a_model_answering_in_the_wrong_shape_is_refused(tmp_path):
  split = _write_split(tmp_path / "Split-test")

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(examples):  # one number per photo instead of one per class
    batch = tf.shape(examples)[0]
    return {"probabilities": tf.fill([batch], 0.5),
            "class_names": tf.tile(tf.constant(CLASSES)[tf.newaxis], [batch, 1])}

  tf.saved_model.save(tf.Module(), str(tmp_path / "model"), signatures={"serving_default": serve})
  with pytest.raises(CanaryError) as raised:
    check_servable(str(tmp_path / "model"), split, count=2)
  assert "\n" not in str(raised.value) and str(raised.value).startswith("canary: ")


def test_a_model_that_takes_pixels_instead_of_encoded_photos_is_refused(tmp_path):
  split = _write_split(tmp_path / "Split-test")

  @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="pixels")])
  def serve(pixels):
    batch = tf.shape(pixels)[0]
    p = tf.tile(tf.constant([[0.5, 0.5]]), [batch, 1])
    return {"probabilities": p, "class_names": tf.tile(tf.constant(CLASSES)[tf.newaxis], [batch, 1])}

  tf.saved_model.save(tf.Module(), str(tmp_path / "model"), signatures={"serving_default": serve})
  with pytest.raises(CanaryError) as raised:
    check_servable(str(tmp_path / "model"), split, count=2)
  assert "\n" not in str(raised.value) and str(raised.value).startswith("canary: ")

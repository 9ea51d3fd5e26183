"""`finetune predict` and the served signatures, on the shared tiny run's pushed model."""
from __future__ import annotations

import base64
import json
import pathlib

from click.testing import CliRunner
from conftest import CLASS_COLORS, image_bytes
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.cli.predict import ModelNotFoundError, resolve_model_dir

CLASSES = {"cats", "dogs"}


def _model_base(config) -> pathlib.Path:
  return pathlib.Path(config.serving_dir) / config.model_name


def _invoke(*args):
  # Click 8.2+ keeps stdout and stderr apart (result.stdout / result.stderr).
  return CliRunner().invoke(main, ["predict", *map(str, args)])


@pytest.fixture(scope="module")
def saved_model(tiny_run):
  """The pushed SavedModel, loaded directly (not through pipeline.cli.predict)."""
  import tensorflow as tf
  (version,) = [p for p in _model_base(tiny_run[0]).iterdir() if p.name.isdigit()]
  return tf.saved_model.load(str(version))


@pytest.fixture
def files(tmp_path):
  """Two good images (a cat-coloured JPEG, a dog-coloured PNG) and two bad paths."""
  red = tmp_path / "red.jpg"
  red.write_bytes(image_bytes(CLASS_COLORS["cats"], seed=101))
  blue = tmp_path / "blue.png"
  blue.write_bytes(image_bytes(CLASS_COLORS["dogs"], seed=102, fmt="PNG"))
  text = tmp_path / "notes.jpg"
  text.write_text("this is not an image")
  return {"good": [red, blue], "text": text, "missing": tmp_path / "missing.jpg"}


def test_bad_files_are_reported_and_the_others_predicted(tiny_run, files):
  config, _ = tiny_run
  red, blue = files["good"]
  # No --model: the default serving folder, located like `finetune run` does.
  result = _invoke(red, files["text"], files["missing"], blue,
                   "--outputs", config.output_dir, "--pipeline-name", config.pipeline_name)
  assert result.exit_code == 1, result.output
  lines = [line.split("  ") for line in result.stdout.splitlines()]
  assert [line[0] for line in lines] == [str(red), str(blue)]
  for _, predicted, probability in lines:
    assert predicted in CLASSES
    assert 0.5 <= float(probability) <= 1.0
  errors = result.stderr.splitlines()
  # Refused before the model, with ingestion's reason.
  assert f"error: {files['text']}: refused: not an image (unrecognised file format)" in errors
  assert f"error: {files['missing']}: no such file" in result.stderr, errors


def test_json_output(tiny_run, files):
  version_dir = resolve_model_dir(_model_base(tiny_run[0]))  # a SavedModel folder works too
  result = _invoke(*files["good"], files["text"], "--model", version_dir, "--json")
  assert result.exit_code == 1, result.output
  red, blue, bad = json.loads(result.stdout)
  for item in (red, blue):
    assert set(item["probabilities"]) == CLASSES
    assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert item["probability"] == max(item["probabilities"].values())
    assert item["probabilities"][item["predicted_class"]] == item["probability"]
  assert bad == {"path": str(files["text"]), "error": bad["error"]}

  result = _invoke(*files["good"], "--model", _model_base(tiny_run[0]), "--json")
  assert result.exit_code == 0, result.output
  assert len(json.loads(result.stdout)) == 2


def test_rest_request_matches_cli(tiny_run, files, saved_model):
  """A TF Serving REST body, decoded as the server does, gives the CLI's numbers."""
  import tensorflow as tf
  paths = files["good"]
  body = json.dumps({
      "signature_name": "predict_images",
      "instances": [{"b64": base64.b64encode(p.read_bytes()).decode("ascii")} for p in paths]})

  request = json.loads(body)
  batch = tf.constant([base64.b64decode(i["b64"]) for i in request["instances"]])
  outputs = saved_model.signatures[request["signature_name"]](image_bytes=batch)

  result = _invoke(*paths, "--model", _model_base(tiny_run[0]), "--json")
  assert result.exit_code == 0, result.output
  printed = json.loads(result.stdout)
  for names, probabilities, predicted, item in zip(
      outputs["class_names"].numpy(), outputs["probabilities"].numpy(),
      outputs["predicted_class"].numpy(), printed):
    assert item["predicted_class"] == predicted.decode()
    expected = [item["probabilities"][n.decode()] for n in names]
    assert np.allclose(probabilities, expected, atol=1e-6)


def test_both_signatures_agree(files, saved_model):
  import tensorflow as tf
  from components.trainer.signatures import EXAMPLES_SIGNATURE, IMAGES_INPUT, IMAGES_SIGNATURE
  from components.transform import IMAGE_KEY
  from pipeline.cli import predict  # keeps copies of the names, to stay free of TensorFlow
  assert (predict.IMAGES_SIGNATURE, predict.IMAGES_INPUT) == (IMAGES_SIGNATURE, IMAGES_INPUT)
  contents = [p.read_bytes() for p in files["good"]]
  contents.append(image_bytes(CLASS_COLORS["cats"], size=(64, 48), fmt="BMP", seed=103))
  examples = [tf.train.Example(features=tf.train.Features(feature={
      IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[c]))}))
      .SerializeToString() for c in contents]

  by_examples = saved_model.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(examples))
  by_images = saved_model.signatures[IMAGES_SIGNATURE](**{IMAGES_INPUT: tf.constant(contents)})
  assert np.allclose(by_examples["probabilities"], by_images["probabilities"], atol=1e-6)
  assert by_examples["predicted_class"].numpy().tolist() == \
      by_images["predicted_class"].numpy().tolist()
  assert by_images["probabilities"].shape == (3, 2)


def test_a_request_of_any_size_is_answered_chunk_by_chunk(saved_model):
  """The signatures run CHUNK photos at a time (memory bounded whatever a client or
  TFMA sends): a request across chunk edges answers as photos sent one by one."""
  import tensorflow as tf
  from components.trainer.signatures import CHUNK, IMAGES_INPUT, IMAGES_SIGNATURE
  serve = saved_model.signatures[IMAGES_SIGNATURE]
  photos = [image_bytes(CLASS_COLORS["cats" if i % 3 else "dogs"], seed=200 + i)
            for i in range(2 * CHUNK + 3)]
  together = serve(**{IMAGES_INPUT: tf.constant(photos)})
  assert together["probabilities"].shape == (len(photos), 2)
  one_by_one = [serve(**{IMAGES_INPUT: tf.constant([p])}) for p in photos]
  np.testing.assert_allclose(together["probabilities"],
                             np.concatenate([o["probabilities"] for o in one_by_one]),
                             atol=1e-6)
  assert together["predicted_class"].numpy().tolist() == \
      [o["predicted_class"].numpy()[0] for o in one_by_one]
  nothing = serve(**{IMAGES_INPUT: tf.constant([], tf.string)})
  assert nothing["probabilities"].shape == (0, 2) and nothing["predicted_class"].shape == (0,)


def test_missing_or_empty_serving_folder(tmp_path, files):
  empty = tmp_path / "serving" / "cats_vs_dogs"
  empty.mkdir(parents=True)
  for args in (["--model", empty], ["--outputs", tmp_path / "no_run"]):
    result = _invoke(*files["good"], *args)
    assert result.exit_code != 0
    assert "run `finetune run` first" in result.stderr, result.output
    assert "Traceback" not in result.output


def test_version_selection(tmp_path):
  for name in ("1", "10", "2", "tmp-3"):
    (tmp_path / name).mkdir()
    (tmp_path / name / "saved_model.pb").write_bytes(b"")
  assert resolve_model_dir(tmp_path) == str(tmp_path / "10")  # numeric order, not text
  assert resolve_model_dir(tmp_path, 2) == str(tmp_path / "2")
  assert resolve_model_dir(tmp_path / "1") == str(tmp_path / "1")
  with pytest.raises(ModelNotFoundError, match="available: 1, 2, 10"):
    resolve_model_dir(tmp_path, 3)
  with pytest.raises(ModelNotFoundError, match="--version"):
    resolve_model_dir(tmp_path / "1", 1)


class _Signature:
  """Stands in for the served signature: answers every photo "cats", records what it got."""

  def __init__(self):
    self.seen = []

  def __call__(self, image_bytes):
    import tensorflow as tf
    contents = image_bytes.numpy().tolist()
    self.seen += contents
    n = len(contents)
    return {"class_names": tf.constant([[b"cats", b"dogs"]] * n),
            "probabilities": tf.constant([[0.9, 0.1]] * n)}


def test_a_decompression_bomb_is_refused_as_ingestion_refuses_it(tmp_path, monkeypatch):
  """A 20000x20000 PNG of a few KB took 1.26 GB to classify: the graph decoded it."""
  from components.image_example_gen.images import RejectedImage, prepare_image
  from pipeline.cli import predict
  from test_images import bomb_png
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(bomb_png())
  good = tmp_path / "red.jpg"
  good.write_bytes(image_bytes(CLASS_COLORS["cats"], seed=101))
  signature = _Signature()
  monkeypatch.setattr(predict, "load_serving_model", lambda path, version: signature)

  result = _invoke(bomb, good, "--model", tmp_path)

  with pytest.raises(RejectedImage) as ingested:
    prepare_image(bomb.read_bytes())
  assert result.exit_code == 1, result.output
  assert result.stderr.splitlines() == [f"error: {bomb}: refused: {ingested.value}"]
  assert result.stdout.splitlines() == [f"{good}  cats  0.9000"]  # the others still classified
  assert signature.seen == [good.read_bytes()]  # the bomb never reached the model


def test_the_run_folder_is_given_as_for_every_other_command(tmp_path):
  # The error said "pass --outputs"; predict only knew --output.
  result = _invoke(tmp_path / "x.jpg", "--outputs", tmp_path / "no_run")
  assert result.exit_code != 0
  assert "no such option" not in result.output.lower()
  assert "no pipeline runs under" in result.stderr and "--outputs" in result.stderr

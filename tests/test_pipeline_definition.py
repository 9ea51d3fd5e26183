"""create_pipeline is wiring only: it opens no file and has one shape."""
import builtins
import os

import tensorflow as tf

from pipeline.config import load_config
from pipeline.pipeline import (DATA_CHECK, MODEL, NEW_DATA_TASKS, READS_SERVED_MODEL, STATISTICS,
                               create_pipeline)


def test_create_pipeline_opens_no_file_and_needs_no_data(monkeypatch):
  config = load_config(None, {"data.root": "/nowhere/photos", "train.weights": "none",
                              "output_dir": "/nowhere/outputs"}).validate()

  def no_io(*args, **kwargs):
    raise AssertionError(f"create_pipeline touched storage: {args}")

  create_pipeline(config, "", "schemas/none.pbtxt")  # imports what it uses
  with monkeypatch.context() as patched:
    for module, name in ((builtins, "open"), (os, "listdir"), (os, "scandir"),
                         (tf.io.gfile, "exists"), (tf.io.gfile, "isdir"),
                         (tf.io.gfile, "listdir"), (tf.io.gfile, "glob"), (tf.io.gfile, "walk"),
                         (tf.io.gfile, "GFile")):
      patched.setattr(module, name, no_io)
    pipeline = create_pipeline(config, "", "schemas/none.pbtxt")
  # One shape: the runners choose which of its stages run.
  assert {component.id for component in pipeline.components} == set(
      MODEL + READS_SERVED_MODEL + NEW_DATA_TASKS)
  assert set(STATISTICS) < set(DATA_CHECK) < set(MODEL)


def test_nothing_about_the_data_is_fixed_in_the_definition():
  config = load_config(None, {"data.root": "s3://never/listed", "train.weights": "none",
                              "output_dir": "s3://b/r"}).validate()
  pipeline = create_pipeline(config, "", "schemas/none.pbtxt")
  by_id = {component.id: component for component in pipeline.components}
  # The training size is 0 (automatic) until Transform and the Trainer read
  # what ingestion found; the Evaluator's metrics follow the classes found.
  assert by_id["Transform"].exec_properties["custom_config"] == '{"image_size": 0}'
  assert by_id["Trainer"].exec_properties["custom_config"]
  assert '"class_ids": {}' in by_id["Evaluator"].exec_properties["eval_config"]

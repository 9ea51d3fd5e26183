"""The whole pipeline under LocalDagRunner on tiny generated photos."""
import json
import os
import pathlib
import shutil

import pytest
import tensorflow as tf

from components.data_gate import DataAnomaliesError
from pipeline import runs
from pipeline.config import load_config
from pipeline.cli.summary import summarize
from pipeline.run_result import read_result
from pipeline.local_runner import run_pipeline
from components.evaluation import read_accuracy
from components.data_facts import report_path
from conftest import (SHARED_DATA, SHARED_WEIGHTS, TINY_VGG, make_dataset, requires_shared,
                      tiny_overrides)

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)


def _versions(config):
  folder = pathlib.Path(config.serving_dir) / config.model_name
  return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_full_run_records_artifacts_and_pushes_a_model(tiny_run):
  config, run = tiny_run
  assert {n: run.nodes[n].state for n in ("ImageExampleGen", "Trainer", "Pusher")} == {
      "ImageExampleGen": "ran", "Trainer": "ran", "Pusher": "ran"}
  examples = run.artifact("ImageExampleGen", "examples")
  assert runs.int_property(examples, "num_examples") == 40
  assert runs.int_property(examples, "num_rejected") == 1
  files = tf.io.gfile.glob(os.path.join(examples.uri, "Split-train", "*.gz"))
  assert sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP")) == 24

  model = run.artifact("Trainer", "model")
  with open(os.path.join(model.uri, "history.json")) as f:
    history = json.load(f)
  assert [r["phase"] for r in history] == [1, 1, 1, 2]
  assert [r["epoch"] for r in history] == [1, 2, 3, 4]
  assert history[0]["learning_rate"] == pytest.approx(1e-3)
  assert history[-1]["learning_rate"] == pytest.approx(1e-5)
  assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[-1])

  assert runs.int_property(run.artifact("BlessingGate", "blessing"), "blessed") == 1
  versions = _versions(config)
  assert len(versions) == 1
  assert (pathlib.Path(config.serving_dir) / config.model_name / versions[0] /
          "saved_model.pb").exists()
  summary = "\n".join(summarize(config, read_result(run)))
  assert "BLESSED" in summary and "rejected train/cats/broken.jpg" in summary


def _rerun(tiny_run, tmp_path, **overrides):
  """Continues the tiny run's history in a copy of its output folder."""
  config, _ = tiny_run
  shutil.copytree(config.output_dir, tmp_path / "out")
  new_config = load_config(None, tiny_overrides(config.data.root, tmp_path / "out",
                                                **{**TINY_VGG, **overrides})).validate()
  return new_config, run_pipeline(new_config, echo=lambda line: None)


def test_an_unblessed_model_leaves_the_serving_folder_alone(tiny_run, tmp_path):
  # One epoch of head training only, against an absolute accuracy floor of 1.0.
  config, run = _rerun(tiny_run, tmp_path, **{"train.phase1_epochs": 1,
                                               "train.phase2_epochs": 0,
                                               "evaluate.accuracy_threshold": 1.0})
  assert runs.int_property(run.artifact("BlessingGate", "blessing"), "blessed") == 0
  assert _versions(config) == _versions(tiny_run[0])
  summary = "\n".join(summarize(config, read_result(run)))
  assert "NOT BLESSED" in summary and "FAILED accuracy: test accuracy" in summary


def test_a_model_worse_than_the_baseline_is_not_blessed(tiny_run, tmp_path):
  # One epoch of head training only: passes the 0.0 threshold, loses to the baseline.
  config, run = _rerun(tiny_run, tmp_path, **{"train.phase1_epochs": 1,
                                               "train.phase2_epochs": 0})
  assert run.nodes["Trainer"].state == "ran"
  summary = "\n".join(summarize(config, read_result(run)))
  assert "NOT BLESSED" in summary, summary
  assert "FAILED baseline: test accuracy" in summary
  assert "vs the served model's 1.0000" in summary
  assert _versions(config) == _versions(tiny_run[0])


def test_anomalies_stop_the_run_before_training(tmp_path):
  data = make_dataset(tmp_path / "photos", {"train": 3, "validation": 1, "test": 1},
                      classes=("birds", "cats", "dogs"))
  config = load_config(None, tiny_overrides(data, tmp_path / "out")).validate()
  with pytest.raises(Exception) as raised:
    run_pipeline(config, echo=lambda line: None)
  message = str(raised.value)
  assert isinstance(raised.value, DataAnomaliesError) or "DataAnomaliesError" in message
  assert "'label'" in message and "'class_name'" in message
  run = runs.load_run(runs.open_store(config.metadata_path))
  assert "Trainer" not in run.nodes and "Transform" not in run.nodes



@requires_shared()
def test_short_fine_tune_on_real_photos_with_offline_weights(tmp_path):
  """The real code path on the real photos: 2000/500/500, no rejections, a useful model."""
  config = load_config(None, {
      "data.root": str(SHARED_DATA), "output_dir": str(tmp_path / "out"),
      "train.weights": str(SHARED_WEIGHTS), "train.alpha": 0.35, "train.image_size": 96,
      "train.max_train_examples": 400, "train.phase1_epochs": 2, "train.phase2_epochs": 1,
      "train.unfreeze": "20", "evaluate.accuracy_threshold": 0.7,
      "evaluate.min_gain_over_chance": 0.4}).validate()
  run = run_pipeline(config, echo=print)
  print("\n".join(summarize(config, read_result(run))))
  with open(report_path(run.artifact("ImageExampleGen", "examples").uri)) as f:
    report = json.load(f)
  assert {s: sum(c.values()) for s, c in report["examples"].items()} == {
      "train": 2000, "validation": 500, "test": 500}
  assert report["num_rejected"] == 0
  accuracy = read_accuracy(run.artifact("Evaluator", "evaluation").uri)
  assert accuracy > 0.7  # chance is 0.5; 400 photos at 96 px for 3 epochs
  assert runs.int_property(run.artifact("BlessingGate", "blessing"), "blessed") == 1


def test_phase2_is_skipped_when_the_head_alone_fits_the_photos(tiny_run, tmp_path):
  config, run = _rerun(tiny_run, tmp_path, **{"train.phase2_max_accuracy": 0.0})
  model_dir = pathlib.Path(run.artifact("Trainer", "model").uri)
  history = json.loads((model_dir / "history.json").read_text())
  training = json.loads((model_dir / "training_summary.json").read_text())
  assert {r["phase"] for r in history} == {1} and training["exported"]["phase"] == 1
  summary = "\n".join(summarize(config, read_result(run)))
  assert f"Training: {config.train.base_model} at {config.train.image_size} px\n" in summary
  assert "Training phase 2: skipped, the head alone reached" in summary
  assert "above train.phase2_max_accuracy 0" in summary


def test_schema_command_proposes_a_schema_as_a_diff(tiny_run, tmp_path):
  from click.testing import CliRunner
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  from pipeline.cli import main
  config, run = tiny_run
  out = tmp_path / "inferred.pbtxt"
  result = CliRunner().invoke(main, ["schema", "--outputs", config.output_dir,
                                     "--output", str(out)])
  assert result.exit_code == 0, result.output
  inferred = text_format.Parse(out.read_text(), schema_pb2.Schema())
  assert {f.name for f in inferred.feature} == {
      "image_raw", "label", "class_name", "path", "height", "width", "format"}
  domains = {d.name: list(d.value) for d in inferred.string_domain}
  assert domains == {"class_name": ["cats", "dogs"], "format": ["BMP", "GIF", "JPEG", "PNG"]}
  label = next(f for f in inferred.feature if f.name == "label")
  assert (label.int_domain.min, label.int_domain.max) == (0, 1)
  # The diff is against the schema the run used, as SchemaImporter recorded it.
  used = run.artifact("SchemaImporter", "schema").uri
  assert f"--- {used}/schema.pbtxt" in result.output and f"+++ {out}" in result.output


def test_a_fine_tune_that_never_beats_the_head_alone_is_not_exported(tiny_run, tmp_path):
  # Phase 2 at an absurd learning rate wrecks the model: early stopping ends
  # it and phase 1's model is exported.
  config, run = _rerun(tiny_run, tmp_path, **{"train.phase1_epochs": 10,
                                               "train.phase1_learning_rate": 0.01,
                                               "train.phase2_optimizer": "sgd",
                                               "train.phase2_learning_rate": 1.0,
                                               "train.phase2_epochs": 5})
  model_dir = pathlib.Path(run.artifact("Trainer", "model").uri)
  history = json.loads((model_dir / "history.json").read_text())
  kept = json.loads((model_dir / "training_summary.json").read_text())["exported"]
  best_phase1 = min((r for r in history if r["phase"] == 1), key=lambda r: r["val_loss"])
  assert sum(r["phase"] == 2 for r in history) >= 1
  assert (kept["phase"], kept["epoch"]) == (1, best_phase1["epoch"])
  assert kept["val_accuracy"] == best_phase1["val_accuracy"]
  summary = "\n".join(summarize(config, read_result(run)))
  assert f"Exported: phase 1 epoch {best_phase1['epoch']}" in summary
  # The exported weights are that epoch's: they score its validation accuracy again.
  from components.evaluation import predict_examples
  examples = run.artifact("ImageExampleGen", "examples").uri
  rows = predict_examples(str(model_dir / "Format-Serving"),
                          os.path.join(examples, "Split-validation"))
  right = sum(r["predicted_class"] == r["true_class"] for r in rows)
  assert right / len(rows) == pytest.approx(kept["val_accuracy"])

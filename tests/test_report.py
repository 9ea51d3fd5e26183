"""`finetune report` and `finetune experiment` on tiny end-to-end runs."""
import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

from click.testing import CliRunner
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from pipeline import runs
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.cli.predict import load_serving_model, predict_files
from pipeline.run_result import read_result
from conftest import (CLASS_COLORS, SHARED_WEIGHTS, TINY_VGG, image_bytes, make_dataset,
                      requires_shared, tiny_overrides)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # whole pipeline runs and experiments (make test-fast leaves them out)


def _images(html: str) -> list[str]:
  return re.findall(r"<img src='([^']+)'", html)


def test_report_shows_the_run_as_its_artifacts_record_it(tiny_run, tmp_path):
  config, run = tiny_run
  result = CliRunner().invoke(main, ["report", "--outputs", config.output_dir,
                                     "--output", str(tmp_path / "report")])
  assert result.exit_code == 0, result.output
  page = tmp_path / "report" / "index.html"
  assert f"Report: {page}" in result.output
  html = page.read_text()

  pictures = _images(html)
  assert {"curves.png", "confusion_matrix.png"} <= set(pictures)
  for picture in pictures:
    with Image.open(page.parent / picture) as image:
      assert image.format == "PNG" and min(image.size) > 20

  # Every epoch of the Trainer's history, as a table row.
  model = run.artifact("Trainer", "model")
  history = json.loads((pathlib.Path(model.uri) / "history.json").read_text())
  for row in history:
    cells = [row["epoch"], row["phase"], f"{row['loss']:.4f}", f"{row['accuracy']:.4f}",
             f"{row['val_loss']:.4f}", f"{row['val_accuracy']:.4f}"]
    assert "<tr>" + "".join(f"<td>{c}</td>" for c in cells) in html

  # TFMA's accuracy and confusion matrix, read here straight from the Evaluator's output.
  evaluation = tfma.load_eval_result(run.artifact("Evaluator", "evaluation").uri)
  overall = dict(evaluation.slicing_metrics)[()][""][""]
  accuracy = overall["sparse_categorical_accuracy"]["doubleValue"]
  assert "accuracy" not in overall and "loss" not in overall  # no Keras compile metrics
  assert f"BLESSED: test accuracy {accuracy:.4f}, balanced accuracy 1.0000;" in html
  assert "<td>balanced accuracy</td><td>passed</td>" in html
  data = json.loads((page.parent / "report.json").read_text())
  matrix = np.array(data["evaluation"]["confusion_matrix"])
  assert matrix.sum() == overall["example_count"]["doubleValue"] == 8
  assert np.trace(matrix) / matrix.sum() == pytest.approx(accuracy)

  # Data summary and lineage.
  assert "<td>train/cats/broken.jpg</td><td>not an image" in html
  assert f"<td>run id</td><td>{run.run_id}</td>" in html
  assert model.uri in html and "<td>base model</td><td>vgg16</td>" in html
  assert "<td>train.unfreeze</td><td>block5_conv1</td>" in html


def test_report_from_another_folder_reads_the_whole_run(tiny_run, tmp_path):
  """A cron job or a shell elsewhere: `finetune report --outputs ABS` finds every artifact."""
  config, run = tiny_run
  outputs = tmp_path / "out"
  shutil.copytree(config.output_dir, outputs)  # the report goes inside: leave the shared run be
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  result = subprocess.run(
      [sys.executable, "-m", "pipeline.cli", "report", "--outputs", str(outputs)],
      cwd=elsewhere, capture_output=True, text=True, timeout=600,
      env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_USE_LEGACY_KERAS": "1"})
  assert result.returncode == 0, result.stdout + result.stderr
  page = outputs / config.pipeline_name / "reports" / run.run_id.replace(":", "-") / "index.html"
  assert f"Report: {page}" in result.stdout
  html = page.read_text()
  assert not re.search(r"(Training|Ingestion|The Evaluator) did not (run|finish)", html)
  assert "<td>train/cats/broken.jpg</td><td>not an image" in html  # ingestion
  assert "curves.png" in html and "BLESSED: test accuracy" in html  # training, evaluation
  assert not list(elsewhere.iterdir())  # nothing written where it started


def test_report_of_a_missing_run_is_a_clear_error(tiny_run):
  config, _ = tiny_run
  result = CliRunner().invoke(main, ["report", "--outputs", config.output_dir,
                                     "--run", "no-such-run"])
  assert result.exit_code == 1 and "no run 'no-such-run'" in result.output
  result = CliRunner().invoke(main, ["report", "--outputs", "/nonexistent/outputs"])
  assert result.exit_code == 2 and "no pipeline runs under /nonexistent/outputs" in result.output


# Two unfreeze rules for VGG16 and the base parameters each adds in phase 2:
# block5 holds three 3x3x512x512 convolutions (+512 biases each).
BLOCK5_CONV = 3 * 3 * 512 * 512 + 512
UNFREEZE_RULES = {"block5_conv1": 3 * BLOCK5_CONV, "block5_conv3": BLOCK5_CONV}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  """An unfreeze experiment on tiny photos; two test cats are dog-coloured (mislabelled)."""
  root = tmp_path_factory.mktemp("experiment")
  data = make_dataset(root / "photos", {"train": 12, "validation": 4, "test": 4})
  for i in range(2):
    (data / "test" / "cats" / f"odd.{i}.jpg").write_bytes(
        image_bytes(CLASS_COLORS["dogs"], seed=100 + i))
  # A setting that would skip phase 2: an unfreeze comparison fine-tunes anyway.
  overrides = tiny_overrides(data, root / "out", **TINY_VGG, **{"train.phase2_max_accuracy": 0})
  args = ["experiment", "unfreeze", "--values", ",".join(UNFREEZE_RULES),
          "--comparison-dir", str(root / "comparison")]
  args += [f"--set={key}={value}" for key, value in overrides.items() if key != "beam_args"]
  args += [f"--beam-arg={arg}" for arg in overrides["beam_args"]]
  result = CliRunner().invoke(main, args)
  assert result.exit_code == 0, result.output
  return load_config(None, overrides).validate(), root / "comparison", result.output, data


def test_experiment_compares_unfreeze_rules_on_one_ingestion(experiment):
  config, comparison, output, _ = experiment
  with open(comparison / "comparison.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["variant"] for r in rows] == list(UNFREEZE_RULES)
  assert all(r["status"] == "ok" for r in rows)
  for row in rows:
    added = int(row["phase2_trainable_params"]) - int(row["phase1_trainable_params"])
    assert added == UNFREEZE_RULES[row["variant"]]
    assert 0 <= float(row["test_accuracy"]) <= 1 and float(row["training_seconds"]) > 0
  assert "| train.unfreeze | status | test_accuracy" in (comparison / "comparison.md").read_text()
  with Image.open(comparison / "comparison.png") as image:
    assert image.format == "PNG"
  assert "| block5_conv3 | ok |" in output

  # Ingestion ran once; the second variant reused it (and Transform) from the cache.
  store = runs.open_store(os.path.join(config.output_dir, f"{config.pipeline_name}-experiments",
                                       "metadata.sqlite"))
  states = {}
  for execution in store.get_executions():
    states.setdefault(runs.node_name(store, execution), []).append(runs.state_name(execution))
  assert states["ImageExampleGen"] == ["ran", "cached"]
  assert states["Transform"] == ["ran", "cached"]
  assert states["Trainer"] == ["ran", "ran"]
  # Experiment models are never pushed to the served model folder.
  assert not (pathlib.Path(config.serving_dir)).exists()


def test_experiment_compares_image_sizes_each_trained_at_its_size(tmp_path):
  from components.trainer.train import SUMMARY_FILE
  data = make_dataset(tmp_path / "photos", {"train": 8, "validation": 4, "test": 4})
  overrides = tiny_overrides(data, tmp_path / "out", **TINY_VGG)
  args = ["experiment", "sizes", "--values", "32,48", "--comparison-dir", str(tmp_path / "cmp")]
  args += [f"--set={key}={value}" for key, value in overrides.items() if key != "beam_args"]
  args += [f"--beam-arg={arg}" for arg in overrides["beam_args"]]
  result = CliRunner().invoke(main, args)
  assert result.exit_code == 0, result.output
  with open(tmp_path / "cmp" / "comparison.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["variant"], r["status"]) for r in rows] == [("32", "ok"), ("48", "ok")]
  assert "| train.image_size | status | test_accuracy | validation_accuracy" in result.output

  config = load_config(None, overrides).validate()
  store = runs.open_store(os.path.join(config.output_dir, f"{config.pipeline_name}-experiments",
                                       "metadata.sqlite"))
  trained_at = sorted(json.loads((pathlib.Path(model.uri) / SUMMARY_FILE).read_text())
                      ["config"]["image_size"] for model in store.get_artifacts_by_type("Model"))
  assert trained_at == [32, 48]

  bad = CliRunner().invoke(main, ["experiment", "sizes", "--values", "224,big", "--data-root",
                                  str(data)])
  assert bad.exit_code == 2 and "not a whole number of pixels: big" in bad.output


def test_gallery_lists_exactly_the_misclassified_test_photos(experiment, tmp_path):
  config, _, _, data = experiment
  from pipeline.cli.experiment import experiment_config
  from pipeline.cli.report import write_report
  exp_config = experiment_config(config)
  run = runs.load_run(runs.open_store(exp_config.metadata_path))
  page = write_report(exp_config, read_result(run), tmp_path / "report")
  report = json.loads((page.parent / "report.json").read_text())

  # Predictions made here another way: raw files from disk through `predict_images`.
  signature = load_serving_model(os.path.join(run.artifact("Trainer", "model").uri,
                                              "Format-Serving"))
  files = sorted((data / "test").rglob("*.jpg"))
  wrong = {f"test/{p.parent.name}/{p.name}" for p, r in zip(files, predict_files(signature, files))
           if r["predicted_class"] != p.parent.name}
  assert {"test/cats/odd.0.jpg", "test/cats/odd.1.jpg"} <= wrong
  assert {m["path"] for m in report["misclassified"]} == wrong
  probabilities = [m["probability"] for m in report["misclassified"]]
  assert probabilities == sorted(probabilities, reverse=True)  # worst first
  html = page.read_text()
  thumbnails = [src for src in _images(html) if src.startswith("misclassified/")]
  assert len(thumbnails) == len(wrong)
  for path in wrong:
    assert f"<td>{path}</td>" in html


@requires_shared()
def test_a_base_without_offline_weights_fails_alone(tmp_path):
  """The offline folder holds MobileNetV2 weights only: VGG16 fails, MobileNetV2 still runs."""
  data = make_dataset(tmp_path / "photos", {"train": 6, "validation": 2, "test": 2})
  overrides = tiny_overrides(data, tmp_path / "out", **{"train.weights": str(SHARED_WEIGHTS),
                                                       "train.phase2_epochs": 0})
  args = ["experiment", "bases", "--bases", "vgg16,mobilenet_v2",
          "--comparison-dir", str(tmp_path / "comparison")]
  args += [f"--set={key}={value}" for key, value in overrides.items() if key != "beam_args"]
  result = CliRunner().invoke(main, args)
  assert result.exit_code == 0, result.output
  with open(tmp_path / "comparison" / "comparison.csv") as f:
    rows = {r["variant"]: r for r in csv.DictReader(f)}
  assert rows["vgg16"]["status"] == "failed"
  assert ("ConfigError: train.weights: No weights for vgg16 in folder" in rows["vgg16"]["error"]
          and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in rows["vgg16"]["error"])
  assert rows["mobilenet_v2"]["status"] == "ok" and float(rows["mobilenet_v2"]["test_accuracy"]) >= 0


def _report_data(cls: str, path: str) -> dict:
  """report.json as collect() writes it, every section filled; `cls` is a class name."""
  classes = [cls, "dogs"]
  wrong = {"path": path, "true_class": cls, "predicted_class": "dogs", "probability": 0.9}
  return {
      "pipeline_name": "pets", "run_id": "run-1",
      "components": {"Trainer": {"state": "ran", "seconds": 1.5}},
      "artifacts": {"Trainer.model": ["/out/Trainer/model/3"]},
      "ingestion": {"data_root": f"/photos/{cls}", "class_names": classes,
                    "examples": {"train": {cls: 3, "dogs": 2}}, "num_examples": 5,
                    "num_rejected": 1, "num_ignored": 1,
                    "rejected": [{"path": path, "reason": "not an image"}], "ignored": [path]},
      "anomalies": [f"[train] feature 'class_name': unexpected value {cls}"],
      "history": [{"epoch": 1, "phase": 1, "loss": 0.5, "accuracy": 0.75, "val_loss": 0.6,
                   "val_accuracy": 0.5, "learning_rate": 0.001, "seconds": 2.0}],
      "training": {"class_names": classes, "base_model": "vgg16", "weights": "none",
                   "config": {"unfreeze": cls}, "exported": {"phase": 1, "epoch": 1},
                   "phases": {"1": {"epochs": 1, "trainable_params": 10, "seconds": 2.0}}},
      "evaluation": {"metrics": {"Overall": {"sparse_categorical_accuracy": 0.5}},
                     "confusion_matrix": [[1, 1], [0, 2]],
                     "per_class": {cls: {"precision": 1.0, "recall": 0.5, "support": 2},
                                   "dogs": {"precision": None, "recall": 1.0, "support": 2}}},
      "blessing": {"blessed": False, "accuracy": 0.75, "balanced_accuracy": 0.75,
                   "baseline_accuracy": None,
                   "checks": [{"rule": "recall", "passed": False, "text": f"{cls} recall 0.5"}]},
      "pushed_to": f"/serving/{cls}/1",
      "test_predictions": 4, "misclassified": [wrong],
  }


def test_names_with_markup_show_literally():
  from html.parser import HTMLParser
  from pipeline.cli.report import render
  cls, path = "c<b>ats & co", "test/<b>odd</b>.jpg"
  page = render(_report_data(cls, path))

  class Text(HTMLParser):
    text, bold = "", []
    def handle_data(self, data):
      self.text += data
    def handle_starttag(self, tag, attrs):
      self.bold += [tag] if tag == "b" else []
      self.text += " ".join(v for _, v in attrs if v)
  parsed = Text()
  parsed.feed(page)
  assert "<b>ats" not in page and "<b>odd" not in page
  # Every place a name shows (tables, captions, alt text, code), as its own text.
  assert parsed.text.count(cls) == page.count("c&lt;b&gt;ats &amp; co") >= 9
  assert parsed.text.count(path) == page.count("test/&lt;b&gt;odd&lt;/b&gt;.jpg") >= 5
  assert parsed.bold == ["b", "b"]  # only the gallery caption's own true/predicted
  assert "NOT BLESSED: test accuracy 0.7500, balanced accuracy 0.7500; served model none" in page
  assert "<td>dogs</td><td>n/a</td><td>1.0000</td><td>2</td>" in page


def test_class_slices_leave_out_one_vs_rest_metrics():
  # A class_name slice holds one class: its AUC of class i (TFMA writes 0.0000)
  # means nothing there; its count and accuracy (that class's recall) do.
  from pipeline.cli.report import _tables
  data = _report_data("cats", "test/a.jpg")
  data["evaluation"]["metrics"] = {
      "overall": {"example_count": 4, "sparse_categorical_accuracy": 0.75,
                  "auc[classId:0]": 0.9, "auc[classId:1]": 0.8},
      "class_name=cats": {"example_count": 2, "sparse_categorical_accuracy": 0.5,
                          "auc[classId:0]": 0.0, "auc[classId:1]": 0.0}}
  table = _tables(data)["metrics"]
  assert table["header"] == ["slice", "auc[classId:0]", "auc[classId:1]", "example_count",
                             "sparse_categorical_accuracy"]
  assert table["rows"] == [["overall", "0.9000", "0.8000", "4.0000", "0.7500"],
                           ["class_name=cats", "-", "-", "2.0000", "0.5000"]]

"""Any photo folder works on the first try: its own name, schema, classes and blessing rules."""
import json
import os
import pathlib
import shutil
import zlib

from click.testing import CliRunner
import pytest
import tensorflow as tf

from components.blessing import judge
from components.data_gate import DataAnomaliesError
from pipeline import runs
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.cli.summary import summarize
from pipeline.run_result import read_result
from pipeline.local_runner import run_pipeline
from pipeline.cli.report import write_report
from conftest import (CLASS_COLORS, SHARED_FLOWERS, SHARED_WEIGHTS, TINY_VGG, image_bytes,
                      make_dataset, requires_shared, tiny_overrides)

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

THREE = ("birds", "cats", "dogs")


def _own_photos_config(data, out, **extra):
  """Tiny settings, but the default blessing rules and no schema given."""
  values = tiny_overrides(data, out, **TINY_VGG, **extra)
  for key in ("data.schema_path", "evaluate.min_gain_over_chance", "evaluate.min_class_recall"):
    del values[key]
  return load_config(None, values).validate()


def test_three_classes_end_to_end_with_an_inferred_schema(tmp_path):
  data = make_dataset(tmp_path / "Garden Birds", {"train": 12, "validation": 4, "test": 4},
                      classes=THREE)
  config = _own_photos_config(data, tmp_path / "out")
  lines = []
  run = run_pipeline(config, echo=lines.append)

  # Named after the folder; a schema inferred from this data, saved and announced.
  assert config.pipeline_name == "garden-birds"
  schema_path = tmp_path / "out" / "garden-birds" / "schema.pbtxt"
  assert f"Schema created: {schema_path} (inferred from this data; review it; later runs " \
         "validate against it)" in lines
  schema = schema_path.read_text()
  assert 'value: "birds"\n  value: "cats"\n  value: "dogs"' in schema
  assert "int_domain {\n    min: 0\n    max: 2\n  }" in schema

  # Trained with a softmax over 3 classes, blessed by the default rules, pushed.
  verdict = json.loads((pathlib.Path(run.artifact("BlessingGate", "blessing").uri)
                        / "verdict.json").read_text())
  assert verdict["blessed"], verdict
  assert [c["rule"] for c in verdict["checks"]] == ["balanced accuracy", "class recall"]
  summary = "\n".join(summarize(config, read_result(run)))
  assert "-> BLESSED" in summary and "passed balanced accuracy" in summary
  served = pathlib.Path(config.serving_dir) / "garden-birds"
  (version,) = [p for p in served.iterdir() if p.name.isdigit()]

  # The served model names its classes; predict needs no side file.
  photo = tmp_path / "bird.jpg"
  photo.write_bytes(image_bytes(CLASS_COLORS["birds"], seed=12345))
  result = CliRunner().invoke(main, ["predict", "--model", str(served), "--json", str(photo)])
  assert result.exit_code == 0, result.output
  (prediction,) = json.loads(result.output)
  assert list(prediction["probabilities"]) == list(THREE)
  assert prediction["predicted_class"] == "birds"

  # The report's confusion matrix is 3x3 and counts every test photo.
  report = write_report(config, read_result(run), tmp_path / "report")
  data_json = json.loads((report.parent / "report.json").read_text())
  matrix = data_json["evaluation"]["confusion_matrix"]
  assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
  assert sum(map(sum, matrix)) == 12
  assert (report.parent / "confusion_matrix.png").exists()
  assert set(data_json["evaluation"]["per_class"]) == set(THREE)

  # A fourth class later is an anomaly against the saved schema: the run stops, naming it.
  for n, split in enumerate(("train", "validation", "test")):
    folder = data / split / "fish"
    folder.mkdir()
    for i in range(3):  # other photos in each split: the same photo twice is kept once
      (folder / f"fish.{i}.jpg").write_bytes(image_bytes(CLASS_COLORS["fish"], seed=100 * n + i))
  with pytest.raises(Exception) as raised:
    run_pipeline(config, echo=lambda line: None)
  message = str(raised.value)
  assert isinstance(raised.value, DataAnomaliesError) or "DataAnomaliesError" in message
  assert "'class_name'" in message and "fish" in message and "'label'" in message
  assert [p.name for p in served.iterdir() if p.name.isdigit()] == [version.name]


def _grey_photos(root: pathlib.Path, counts: dict[str, dict[str, int]]) -> pathlib.Path:
  """Classes that look alike: a model can only learn how often each occurs."""
  for split, per_class in counts.items():
    for name, count in per_class.items():
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        (folder / f"{i}.jpg").write_bytes(
            image_bytes((120, 120, 120), seed=zlib.crc32(f"{split}{name}{i}".encode())))
  return root


def test_a_model_that_ignores_a_minority_class_is_not_blessed(tmp_path):
  data = _grey_photos(tmp_path / "lookalikes", {
      "train": {"common": 30, "rare": 4}, "validation": {"common": 6, "rare": 1},
      "test": {"common": 10, "rare": 2}})
  config = _own_photos_config(data, tmp_path / "out")
  run = run_pipeline(config, echo=lambda line: None)
  blessing = run.artifact("BlessingGate", "blessing")
  assert runs.int_property(blessing, "blessed") == 0
  verdict = json.loads((pathlib.Path(blessing.uri) / "verdict.json").read_text())
  assert verdict["recall"]["rare"] == 0 and verdict["accuracy"] == pytest.approx(10 / 12)
  failed = {c["rule"]: c["text"] for c in verdict["checks"] if not c["passed"]}
  assert failed["class recall"] == "recall below 0.2 for rare (0.0000)"
  assert "balanced accuracy 0.5000 vs 0.7500 needed" in failed["balanced accuracy"]
  assert not (pathlib.Path(config.serving_dir) / config.model_name).exists()
  summary = "\n".join(summarize(config, read_result(run)))
  assert "-> NOT BLESSED" in summary and "FAILED class recall: recall below 0.2 for rare" in summary


def test_the_rules_of_the_blessing():
  rules = dict(min_gain_over_chance=0.5, min_class_recall=0.2, accuracy_threshold=0.0,
               max_accuracy_drop=0.0)

  def recalls(*values):
    return dict(zip("abcde", values))

  good = judge(0.8, recalls(0.9, 0.8, 0.7, 0.6, 0.7), None, **rules)
  assert good["blessed"] and good["balanced_accuracy"] == pytest.approx(0.74)
  assert good["checks"][0]["bound"] == pytest.approx(0.6)  # 1/5 + half of the rest

  # Always answering the majority class: balanced accuracy 1/5, four classes at 0.
  majority = judge(0.4, recalls(1, 0, 0, 0, 0), None, **rules)
  assert not majority["blessed"]
  assert [c["passed"] for c in majority["checks"]] == [False, False]

  # One class ignored, the rest perfect: the floor catches it; without it, it would pass.
  assert not judge(0.95, recalls(1, 1, 1, 1, 0), None, **rules)["blessed"]
  assert judge(0.95, recalls(1, 1, 1, 1, 0), None, **{**rules, "min_class_recall": 0})["blessed"]
  # A class the test split does not show cannot be vouched for, unless the floor is off.
  unseen = judge(0.9, recalls(0.9, 0.9, 0.9, 0.9, None), None, **rules)
  assert not unseen["blessed"]
  assert unseen["checks"][1]["text"] == "no test photos of e: their recall is unknown"
  assert judge(0.9, recalls(0.9, 0.9, 0.9, 0.9, None), None,
               **{**rules, "min_class_recall": 0})["blessed"]

  # The user's absolute floor, and never worse than the served model.
  assert not judge(0.8, recalls(*[0.8] * 5), None,
                   **{**rules, "accuracy_threshold": 0.9})["blessed"]
  worse = judge(0.8, recalls(*[0.8] * 5), 0.85, **rules)
  assert not worse["blessed"] and worse["checks"][-1]["rule"] == "baseline"
  assert judge(0.8, recalls(*[0.8] * 5), 0.8, **rules)["blessed"]  # a tie passes
  assert judge(0.8, recalls(*[0.8] * 5), 0.82, **{**rules, "max_accuracy_drop": 0.03})["blessed"]


@requires_shared(SHARED_FLOWERS)
def test_flowers_end_to_end_with_offline_weights(tmp_path):
  """The real 5-class photos, flat and unbalanced, as a new user runs them (small and fast)."""
  config = load_config(None, {
      "data.root": str(SHARED_FLOWERS), "output_dir": str(tmp_path / "out"),
      "train.weights": str(SHARED_WEIGHTS), "train.alpha": 0.35,
      "train.phase1_epochs": 10, "train.phase2_epochs": 2, "train.unfreeze": "20"}).validate()
  lines = []
  run = run_pipeline(config, echo=lines.append)
  print("\n".join(lines + summarize(config, read_result(run))))
  assert config.pipeline_name == "flowers"
  assert any(line.startswith("Schema created: ") for line in lines)
  report = json.loads(tf.io.gfile.GFile(os.path.join(
      run.artifact("ImageExampleGen", "examples").uri, "ingestion", "report.json")).read())
  assert report["class_names"] == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
  # The 4 photos filed under both rose and tulip, and 2 exact duplicates.
  assert report["num_conflicting"] == 8 and report["num_rejected"] == 10
  assert report["num_examples"] == 3476 - 10
  verdict = json.loads((pathlib.Path(run.artifact("BlessingGate", "blessing").uri)
                        / "verdict.json").read_text())
  assert verdict["accuracy"] > 0.6  # chance is 0.2; the majority class is 0.24
  assert len(verdict["recall"]) == 5 and min(verdict["recall"].values()) > 0.2
  assert verdict["blessed"], verdict["checks"]
  served = pathlib.Path(config.serving_dir) / "flowers"
  assert any((p / "saved_model.pb").exists() for p in served.iterdir())
  # The defaults at work: the photos' own size (128 px thumbnails, not upscaled),
  # and a phase-2 learning rate on a cosine from 1e-4 towards 0.
  model_dir = pathlib.Path(run.artifact("Trainer", "model").uri)
  assert json.loads((model_dir / "training_summary.json").read_text())["config"][
      "image_size"] == 128
  rates = [r["learning_rate"] for r in json.loads((model_dir / "history.json").read_text())
           if r["phase"] == 2]
  assert rates == pytest.approx([5e-5, 0.0], abs=2e-6)
  shutil.rmtree(tmp_path / "out")

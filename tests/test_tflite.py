"""The on-device export: a .tflite model in the pushed version, judged on the test photos."""
import json
import pathlib
import shutil

from click.testing import CliRunner
import numpy as np
import pytest

from components.serving import served_versions
from components.trainer.tflite import predict_pixels
from pipeline.cli import main
from pipeline.config import with_overrides
from pipeline.cli.summary import summarize
from pipeline.run_result import read_result
from pipeline.local_runner import run_pipeline

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)


def test_a_float16_model_travels_with_the_pushed_version(tiny_run, tmp_path):
  config, _ = tiny_run
  shutil.copytree(config.output_dir, tmp_path / "out")
  with_tflite = with_overrides(config, {"output_dir": str(tmp_path / "out"),
                                        "serving.tflite": "float16"})
  run = run_pipeline(with_tflite, echo=lambda line: None)
  model_dir = tmp_path / "out" / config.pipeline_name / "serving" / config.model_name
  extra = model_dir / str(max(served_versions(str(model_dir)))) / "assets.extra"
  card = json.loads((extra / "model_card.json").read_text())
  on_device = card["tflite"]
  assert on_device["kind"] == "float16" and on_device["bytes"] == (extra / "model.tflite").stat().st_size
  # Half-precision weights: the same answers on the same test photos, give or take a photo.
  assert abs(on_device["accuracy"] - card["accuracy"]) <= 1 / 8
  assert any(line.startswith("On-device model (TFLite float16)")
             for line in summarize(with_tflite, read_result(run)))
  # `finetune predict` runs it with the served model's pre-processing: the same answers.
  photo = sorted((pathlib.Path(with_tflite.data.root) / "test" / "dogs").iterdir())[0]
  answers = {}
  for model in (model_dir, extra / "model.tflite"):
    result = CliRunner().invoke(main, ["predict", "--model", str(model), "--json", str(photo)])
    assert result.exit_code == 0, result.output
    answers[model.name] = json.loads(result.output)[0]
  saved, on_device = answers.values()
  assert on_device["predicted_class"] == saved["predicted_class"]
  assert abs(on_device["probability"] - saved["probability"]) < 0.02
  probabilities = predict_pixels(str(extra / "model.tflite"),
                                 np.full((2, 32, 32, 3), 128.0, np.float32))
  assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)

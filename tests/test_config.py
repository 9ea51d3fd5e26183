"""pipeline/config.py: sources, coercion and every check made before any work starts."""
import os

import pytest

from pipeline.config import ConfigError, load_config, name_for, with_overrides
from conftest import SHARED_WEIGHTS


def _valid(tmp_path, **overrides):
  return load_config(None, {"data.root": str(tmp_path), "train.weights": "none", **overrides})


def test_yaml_then_flags_with_coercion(tmp_path):
  path = tmp_path / "run.yaml"
  path.write_text("train:\n  image_size: 160\n  flip: 'no'\nevaluate:\n  min_class_recall: 0.3\n")
  config = load_config(str(path), {"train.batch_size": "16", "train.image_size": "192",
                                   "data.split_ratios": "{train: 7, validation: 2, test: 1}"})
  assert config.train.image_size == 192 and config.train.batch_size == 16
  assert config.train.flip is False and config.evaluate.min_class_recall == 0.3
  assert config.data.split_ratios == {"train": 7, "validation": 2, "test": 1}


@pytest.mark.parametrize("overrides, message", [
    ({"train.image_size": "big"}, "train.image_size: expected int, got 'big'"),
    ({"train.batch_size": 1.5}, "train.batch_size: expected int, got 1.5"),
    ({"train.flip": "maybe"}, "train.flip: expected bool, got 'maybe'"),
    ({"train.imagesize": 1}, "unknown setting 'train.imagesize'; known: train.base_model"),
    ({"trainer.epochs": 1}, "unknown setting 'trainer'"),
    ({"train": 3}, "train: expected a mapping, got 3"),
])
def test_bad_values_name_the_setting(overrides, message):
  with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
    load_config(None, overrides)


def test_yaml_errors_name_the_file(tmp_path):
  bad = tmp_path / "bad.yaml"
  bad.write_text("train: [unclosed\n")
  with pytest.raises(ConfigError, match=f"config file {bad} is not valid YAML"):
    load_config(str(bad))
  listed = tmp_path / "list.yaml"
  listed.write_text("- a\n- b\n")
  with pytest.raises(ConfigError, match="must hold a mapping at the top"):
    load_config(str(listed))
  with pytest.raises(ConfigError, match=f"cannot read config file {tmp_path / 'none.yaml'}"):
    load_config(str(tmp_path / "none.yaml"))


@pytest.mark.parametrize("overrides, message", [
    ({"train.base_model": "resnet18"}, "train.base_model: unknown base 'resnet18'; choose from"),
    ({"train.phase1_epochs": 0}, "train.phase1_epochs must be at least 1, got 0"),
    ({"train.phase2_epochs": -1}, "train.phase2_epochs must be at least 0, got -1"),
    ({"train.batch_size": 0}, "train.batch_size must be at least 1, got 0"),
    ({"train.base_model": "xception", "train.image_size": 64},
     "train.image_size must be at least 71 for xception, got 64"),
    ({"train.base_model": "inception_v3", "train.image_size": 72},
     "train.image_size must be at least 75 for inception_v3, got 72"),
    ({"train.image_size": 16}, "train.image_size must be at least 32 for mobilenet_v2"),
    ({"train.phase2_optimizer": "adamw"}, "train.phase2_optimizer: unknown optimizer 'adamw'"),
    ({"train.phase1_learning_rate": 0}, r"train.phase1_learning_rate must be in \(0, 1\]"),
    ({"train.alpha": 0.6}, "train.alpha must be one of 0.35, 0.5"),
    ({"train.dropout": 1.0}, "train.dropout must be between 0.0 and 0.95"),
    ({"evaluate.min_class_recall": 1.5}, "evaluate.min_class_recall must be between 0.0 and 1.0"),
    ({"data.split_ratios": {"train": 1, "test": 1}}, "data.split_ratios needs positive train"),
    ({"pipeline_name": "Cats_vs_Dogs"}, "pipeline_name 'Cats_vs_Dogs' is not allowed: .* "
                                        "e.g. 'cats-vs-dogs'"),
    ({"beam_args": ["--direct_running_mode=multi_threading"]},
     "beam_args: --direct_running_mode=multi_threading is not safe here"),
    ({"train.weights": "/no/such/weights.h5"}, "train.weights: Weights file not found"),
])
def test_each_rule_is_checked_before_any_work(tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=message):
    _valid(tmp_path, **overrides).validate()


@pytest.mark.parametrize("overrides, message", [
    # nan passes every range check; these failed in the Trainer minutes into a run.
    ({"train.dropout": "nan"}, "train.dropout must be a finite number, got nan"),
    ({"train.phase1_learning_rate": "nan"}, "train.phase1_learning_rate must be a finite number"),
    ({"train.zoom": "inf"}, "train.zoom must be a finite number, got inf"),
    ({"evaluate.min_class_recall": "-inf"}, "evaluate.min_class_recall must be a finite number"),
    ({"train.alpha": "nan"}, "train.alpha must be a finite number"),
    ({"train.image_size": 100000}, "train.image_size must be 0 .* or between 32 and 1024, "
                                   "got 100000"),
    ({"train.image_size": 1025}, "train.image_size must be 0 .* or between 32 and 1024"),
    ({"train.phase1_epochs": 10**6}, "train.phase1_epochs must be at most 1000, got 1000000"),
    ({"train.phase2_epochs": 1001}, "train.phase2_epochs must be at most 1000"),
    ({"train.phase2_views": 9}, "train.phase2_views must be at most 8, got 9"),
    ({"train.batch_size": 100000}, "train.batch_size must be at most 4096"),
    ({"train.early_stopping_patience": 10**5}, "train.early_stopping_patience must be at most 1000"),
    ({"train.phase2_learning_rate": 5}, r"train.phase2_learning_rate must be in \(0, 1\]"),
    ({"train.dropout": -0.1}, "train.dropout must be between 0.0 and 0.95"),
    ({"data.max_image_side": 10**6}, "data.max_image_side must be at most 16384"),
])
def test_settings_that_would_fail_later_are_refused_at_once(tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=message):
    _valid(tmp_path, **overrides).validate()


def test_the_largest_sensible_settings_pass_and_one_more_does_not(tmp_path):
  largest = {"train.image_size": 1024, "train.batch_size": 4096, "train.phase1_epochs": 1000,
             "train.dropout": 0.95}
  train = _valid(tmp_path, **largest).validate().train
  assert (train.image_size, train.batch_size, train.phase1_epochs, train.dropout) == (
      1024, 4096, 1000, 0.95)  # kept as given, not clamped
  for key, value in largest.items():
    with pytest.raises(ConfigError, match=key):
      _valid(tmp_path, **{**largest, key: value + (1 if isinstance(value, int) else 0.01)}
             ).validate()


def test_a_nan_setting_is_one_line_with_exit_code_2(tmp_path):
  from click.testing import CliRunner
  from pipeline.cli import main
  result = CliRunner().invoke(main, ["run", "--data-root", str(tmp_path), "--outputs",
                                     str(tmp_path / "out"), "--weights", "none",
                                     "--set", "train.dropout=nan"])
  assert result.exit_code == 2, result.output
  assert result.output.strip().splitlines() == [
      "Error: train.dropout must be a finite number, got nan"]


def test_missing_data_root():
  with pytest.raises(ConfigError, match="data.root is not set"):
    load_config(None, {}).validate()


def test_weights_folder_without_the_base_file(tmp_path):
  with pytest.raises(ConfigError, match="train.weights: No weights for vgg16 in folder"):
    _valid(tmp_path, **{"train.weights": str(tmp_path), "train.base_model": "vgg16"}).validate()


@pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="offline weights not found")
def test_offline_weights_folder_passes_for_the_bases_it_holds(tmp_path):
  config = _valid(tmp_path, **{"train.weights": str(SHARED_WEIGHTS)}).validate()
  assert config.train.base_model == "mobilenet_v2"
  # The folder holds MobileNetV2's weights only: it is looked into, not taken on trust.
  with pytest.raises(ConfigError, match="train.weights: No weights for vgg16 in folder"):
    with_overrides(config, {"train.base_model": "vgg16"}).validate()


@pytest.mark.parametrize("root, name", [
    ("../shared/data/cats_vs_dogs", "cats-vs-dogs"), ("/data/flowers/", "flowers"),
    ("s3://bucket/My Holiday Photos", "my-holiday-photos"), ("gs://b/__x__", "x"),
    ("/data/Été 2024", "ete-2024"), ("/data/!!!", "photos")])
def test_names_follow_the_data_folder(root, name):
  assert name_for(root) == name


def test_default_names_and_schema_follow_the_data(tmp_path):
  flowers = _valid(tmp_path / "flowers").validate()
  cats = _valid(tmp_path / "cats_vs_dogs").validate()
  assert (flowers.pipeline_name, flowers.model_name) == ("flowers", "flowers")
  assert flowers.run_dir != cats.run_dir and flowers.serving_dir != cats.serving_dir
  # The curated schema of cats-vs-dogs; the inferred one, next to the outputs, otherwise.
  assert cats.schema_file.endswith("schemas/cats-vs-dogs.pbtxt")
  # Paths are made absolute before anything is recorded: a later command, or
  # a cron job, started in another folder reads the same outputs.
  assert flowers.schema_file == os.path.abspath("outputs/flowers/schema.pbtxt")
  assert flowers.output_dir == os.path.abspath("outputs")
  named = _valid(tmp_path / "flowers", pipeline_name="garden").validate()
  assert named.pipeline_name == "garden" and named.run_dir.endswith("garden")


def test_beam_args_keep_the_in_process_runner(tmp_path):
  config = _valid(tmp_path, beam_args=["--direct_num_workers=1"]).validate()
  assert config.beam_pipeline_args == ["--direct_num_workers=1",
                                       "--direct_running_mode=in_memory"]
  remote = with_overrides(config, {"beam_args": ["--runner=DataflowRunner", "--project=p"]})
  assert remote.validate().beam_pipeline_args == ["--runner=DataflowRunner", "--project=p"]

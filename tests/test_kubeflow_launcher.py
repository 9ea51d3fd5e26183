"""The compiled Kubeflow package, run task by task as KFP's launcher runs it (tests/kfp_launcher.py).

No cluster: each task's exact command and arguments run here in a subprocess,
with the ExecutorInput the open-source KFP v2 driver would build, and the
ExecutorOutput read back as its launcher does. The "object store" is a local
folder: the package's pipeline root is <store>/<name>/pipeline_root and served
models go to <store>/<name>/serving/<name>/<version>/.
"""
from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner
import pytest

from conftest import (CATS_VS_DOGS_SCHEMA, CLASS_COLORS, TINY_VGG, image_bytes, make_dataset,
                      tiny_overrides)
import kfp_launcher
from kfp_launcher import TaskFailed
from pipeline.cli import main
from pipeline.config import load_config

IMAGE = "example/finetune:test"
PER_SPLIT = {"train": 12, "validation": 4, "test": 4}
DAG_ORDER = ["ImageExampleGen", "SchemaImporter", "StatisticsGen", "ExampleValidator",
             "DataGate", "Transform", "Trainer", "Evaluator", "BlessingGate", "Pusher"]


def _config(data: pathlib.Path, store: pathlib.Path):
  return load_config(None, tiny_overrides(
      data, store, **{**TINY_VGG, "train.phase1_epochs": 2, "train.phase2_epochs": 1,
                      "data.schema_path": str(CATS_VS_DOGS_SCHEMA), "kubeflow.image": IMAGE}))


def _compile(config, package: pathlib.Path) -> dict:
  from pipeline.kubeflow_runner import compile_pipeline
  return compile_pipeline(config, str(package))


def _report(examples_uri: str) -> dict:
  return json.loads((pathlib.Path(examples_uri) / "ingestion" / "report.json").read_text())


def _verdict(run: dict) -> dict:
  blessing = pathlib.Path(run["BlessingGate"]["outputs"]["blessing"]["uri"])
  return json.loads((blessing / "verdict.json").read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """(config, package path, spec) for split folders of tiny photos, one of them broken."""
  root = tmp_path_factory.mktemp("kfp_launcher")
  data = make_dataset(root / "cats_vs_dogs", PER_SPLIT)
  (data / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  config = _config(data, root / "store")
  package = root / "pipeline.yaml"
  spec = _compile(config, package)
  return config, package, spec


@pytest.fixture(scope="module")
def first_run(compiled):
  config, package, spec = compiled
  return kfp_launcher.run_package(str(package), spec["defaultPipelineRoot"], "run-1")


@pytest.fixture(scope="module")
def second_run(compiled, first_run):
  """The same package again, as a schedule would run it: nothing recompiled."""
  config, package, spec = compiled
  return kfp_launcher.run_package(str(package), spec["defaultPipelineRoot"], "run-2")


def test_the_package_runs_in_dag_order_with_the_driver_hook_skipped(compiled):
  config, package, spec = compiled
  assert spec["defaultPipelineRoot"] == config.pipeline_root == (
      f"{config.output_dir}/{config.pipeline_name}/pipeline_root")
  assert kfp_launcher.dag_order(kfp_launcher.load_package(str(package))) == DAG_ORDER
  executors = spec["deploymentSpec"]["executors"]
  hooks = {name: sorted(e["container"].get("lifecycle", {})) for name, e in executors.items()}
  # Only the ExampleGen carries TFX's driver, and the open-source backend never runs it.
  assert {name: h for name, h in hooks.items() if h} == {"ImageExampleGen_executor": ["preCacheCheck"]}


def test_every_task_succeeds_and_the_first_push_has_no_baseline(compiled, first_run):
  config, _, _ = compiled
  assert list(first_run) == DAG_ORDER
  assert {name: r["returncode"] for name, r in first_run.items()} == dict.fromkeys(DAG_ORDER, 0)
  assert first_run["ImageExampleGen"]["skipped_hooks"] == ["preCacheCheck"]

  examples = first_run["ImageExampleGen"]["outputs"]["examples"]
  report = _report(examples["uri"])
  assert report["examples"] == {split: {"cats": n, "dogs": n} for split, n in PER_SPLIT.items()}
  assert report["num_examples"] == 2 * sum(PER_SPLIT.values())
  assert [r["path"] for r in report["rejected"]] == ["train/cats/broken.jpg"]
  # What consumers were handed, after KFP's MLMD round trip.
  assert json.loads(examples["metadata"]["split_names"]) == ["train", "validation", "test"]
  assert examples["metadata"]["num_examples"] == report["num_examples"]

  verdict = _verdict(first_run)
  assert verdict["served_version"] is None and verdict["baseline_accuracy"] is None
  assert verdict["blessed"] is True

  pushed = first_run["Pusher"]["outputs"]["pushed_model"]["metadata"]
  assert pushed["pushed"] == 1
  version = pushed["pushed_version"]
  model_base = pathlib.Path(config.serving_dir) / config.model_name
  assert pushed["pushed_destination"] == str(model_base / version)
  assert (model_base / version / "saved_model.pb").is_file()


def test_the_pushed_model_predicts_a_class(compiled, first_run, tmp_path):
  config, _, _ = compiled
  photo = tmp_path / "red.jpg"
  photo.write_bytes(image_bytes(CLASS_COLORS["cats"], seed=7))
  model_base = pathlib.Path(config.serving_dir) / config.model_name
  result = CliRunner().invoke(main, ["predict", "--model", str(model_base), str(photo)])
  assert result.exit_code == 0, result.output
  path, predicted, probability = result.stdout.strip().split("  ")
  assert path == str(photo) and predicted in {"cats", "dogs"}
  assert 0.5 <= float(probability) <= 1.0


def test_a_second_run_measures_the_served_model_as_its_baseline(first_run, second_run):
  assert {name: r["returncode"] for name, r in second_run.items()} == dict.fromkeys(DAG_ORDER, 0)
  first_version = int(first_run["Pusher"]["outputs"]["pushed_model"]["metadata"]["pushed_version"])
  verdict = _verdict(second_run)
  assert verdict["served_version"] == first_version
  assert 0.0 <= verdict["baseline_accuracy"] <= 1.0
  assert any(c["rule"] == "baseline" for c in verdict["checks"])


def test_new_photos_cannot_hit_a_stale_example_gen_cache(compiled):
  """The backend caches on parameters alone; ImageExampleGen is compiled uncached."""
  config, package, _ = compiled
  spec = kfp_launcher.load_package(str(package))
  task = spec["root"]["dag"]["tasks"]["ImageExampleGen"]
  container = spec["deploymentSpec"]["executors"]["ImageExampleGen_executor"]["container"]

  def key(run_id):
    invocation = kfp_launcher.executor_input(spec, "ImageExampleGen", "/store", run_id, {})
    return kfp_launcher.cache_key(invocation, container)

  before = key("run-a")
  new_photo = pathlib.Path(config.data.root) / "train" / "dogs" / "new.jpg"
  new_photo.write_bytes(image_bytes(CLASS_COLORS["dogs"], seed=99))
  try:
    after = key("run-b")
  finally:
    new_photo.unlink()
  cached = task.get("cachingOptions", {}).get("enableCache", False)
  assert not cached or after != before, (
      "a rerun after new photos arrived would reuse the previous run's Examples")


def test_a_new_span_is_ingested_without_recompiling(tmp_path):
  """No driver runs on that backend: the executor resolves {SPAN} to the newest span."""
  data = tmp_path / "cats_vs_dogs"
  counts = {"span-1": {"train": 2, "validation": 1, "test": 1},
            "span-2": {"train": 3, "validation": 1, "test": 1}}
  make_dataset(data / "span-1", counts["span-1"])
  (data / "span-1" / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  package = tmp_path / "pipeline.yaml"
  _compile(_config(data, tmp_path / "store"), package)  # once: a schedule runs one package
  spec = kfp_launcher.load_package(str(package))

  def ingest(run_id: str) -> dict:
    # ImageExampleGen is a root task: running it alone is what the run would do first.
    record = kfp_launcher.run_task(spec, "ImageExampleGen", spec["defaultPipelineRoot"],
                                   run_id, {})
    return _report(record["outputs"]["examples"]["uri"])

  report = ingest("run-1")
  assert report["num_examples"] == 2 * sum(counts["span-1"].values())
  assert [r["path"] for r in report["rejected"]] == ["span-1/train/cats/broken.jpg"]

  make_dataset(data / "span-2", counts["span-2"])  # the next data drop, same classes
  (data / "span-2" / "train" / "dogs" / "broken.jpg").write_bytes(b"not an image")
  report = ingest("run-2")
  assert report["num_examples"] == 2 * sum(counts["span-2"].values())
  assert [r["path"] for r in report["rejected"]] == ["span-2/train/dogs/broken.jpg"]

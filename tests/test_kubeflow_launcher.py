"""The compiled Kubeflow package, run task by task as KFP's launcher runs it (tests/kfp_launcher.py).

No cluster: each task's exact command and arguments run here in a subprocess,
with the ExecutorInput the open-source KFP v2 driver would build, and the
ExecutorOutput read back as its launcher does. The photos and the pipeline
root are in a local S3 server on 127.0.0.1 (moto), as on a cluster with MinIO:
tasks get its endpoint from the package and its keys from a "Kubernetes
secret" named in the package's platform spec. Served models go to
s3://mlpipeline/finetune/<name>/serving/<name>/<version>/.

This process never loads tensorflow_io (it aborts at exit after S3 use): the
package is compiled by the `finetune` command, and objects are read with boto3.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys

import boto3
from moto.server import ThreadedMotoServer
import pytest

from conftest import CATS_VS_DOGS_SCHEMA, CLASS_COLORS, TINY_VGG, image_bytes, make_dataset, tiny_overrides
import kfp_launcher
from kfp_launcher import TaskFailed

IMAGE = "example/finetune:test"
PER_SPLIT = {"train": 12, "validation": 4, "test": 4}
DAG_ORDER = ["ImageExampleGen", "SchemaImporter", "SpanDrift", "StatisticsGen",
             "ExampleValidator", "DataGate", "Transform", "Trainer", "Evaluator", "BlessingGate",
             "Pusher"]
REGION = "us-east-1"
# The namespace's secret the package names; its values are planted to be looked for.
SECRET_NAME = "finetune-s3"
SECRETS = {SECRET_NAME: {"AWS_ACCESS_KEY_ID": "planted-key-id-7f3a",
                         "AWS_SECRET_ACCESS_KEY": "planted-s3cr3t-9c2e1b"}}


class Store:
  """The local S3 server: its endpoint, and boto3 to seed and inspect it."""

  def __init__(self, endpoint: str):
    self.endpoint = endpoint
    self.client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                               **{k.lower(): v for k, v in SECRETS[SECRET_NAME].items()})

  @property
  def env(self) -> dict[str, str]:
    """What a user's shell holds to reach the store (compile, predict)."""
    return {**SECRETS[SECRET_NAME], "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION}

  def upload(self, folder: pathlib.Path, uri: str) -> None:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for path in sorted(folder.rglob("*")):
      if path.is_file():
        self.client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")

  def read(self, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

  def exists(self, uri: str) -> bool:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)["KeyCount"] > 0


@pytest.fixture(scope="module")
def store():
  logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
  server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
  server.start()
  host, port = server.get_host_and_port()
  s3 = Store(f"http://{host}:{port}")
  for bucket in ("photos", "mlpipeline"):
    s3.client.create_bucket(Bucket=bucket)
  yield s3
  server.stop()


def finetune(store: Store, *args: str) -> subprocess.CompletedProcess:
  """The `finetune` command in its own process, with the user's S3 environment."""
  env = {**os.environ, **store.env, "TF_USE_LEGACY_KERAS": "1"}
  return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                        text=True, env=env, cwd=kfp_launcher.REPO_ROOT, timeout=600)


def _compile(store: Store, data_uri: str, package: pathlib.Path) -> subprocess.CompletedProcess:
  settings = tiny_overrides(data_uri, "s3://mlpipeline/finetune", **{
      **TINY_VGG, "train.phase1_epochs": 2, "train.phase2_epochs": 1,
      "data.schema_path": str(CATS_VS_DOGS_SCHEMA), "kubeflow.image": IMAGE,
      "kubeflow.s3_endpoint": store.endpoint, "kubeflow.s3_region": REGION,
      "kubeflow.s3_secret": SECRET_NAME, "kubeflow.s3_secret_access_key_id": "AWS_ACCESS_KEY_ID",
      "kubeflow.s3_secret_secret_access_key": "AWS_SECRET_ACCESS_KEY"})
  args = ["kubeflow", "compile", "--output", str(package)]
  for key, value in settings.items():
    args += [f"--beam-arg={v}" for v in value] if key == "beam_args" else ["--set", f"{key}={value}"]
  result = finetune(store, *args)
  assert result.returncode == 0, result.stdout + result.stderr  # 134 would be the S3 abort
  return result


def _run(package: pathlib.Path, work: pathlib.Path, run_id: str) -> dict[str, dict]:
  spec = kfp_launcher.load_package(str(package))
  return kfp_launcher.run_package(str(package), spec["defaultPipelineRoot"], run_id,
                                  work_dir=str(work), secrets=SECRETS)


def _report(store: Store, examples_uri: str) -> dict:
  return json.loads(store.read(f"{examples_uri}/ingestion/report.json"))


def _verdict(store: Store, run: dict) -> dict:
  return json.loads(store.read(f"{run['BlessingGate']['outputs']['blessing']['uri']}/verdict.json"))


@pytest.fixture(scope="module")
def compiled(store, tmp_path_factory):
  """(package path, spec, compile output, work folder) for split folders of tiny photos
  in s3://photos/cats_vs_dogs, one of them broken."""
  root = tmp_path_factory.mktemp("kfp_launcher")
  data = make_dataset(root / "cats_vs_dogs", PER_SPLIT)
  (data / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  store.upload(data, "s3://photos/cats_vs_dogs")
  package = root / "pipeline.yaml"
  result = _compile(store, "s3://photos/cats_vs_dogs", package)
  return package, kfp_launcher.load_package(str(package)), result.stdout + result.stderr, root


@pytest.fixture(scope="module")
def first_run(compiled):
  package, _, _, root = compiled
  return _run(package, root / "kfp", "run-1")


@pytest.fixture(scope="module")
def second_run(compiled, first_run):
  """The same package again, as a schedule would run it: nothing recompiled."""
  package, _, _, root = compiled
  return _run(package, root / "kfp", "run-2")


SERVING = "s3://mlpipeline/finetune/cats-vs-dogs/serving/cats-vs-dogs"


def test_the_package_runs_in_dag_order_with_the_driver_hook_skipped(compiled):
  package, spec, _, _ = compiled
  assert spec["defaultPipelineRoot"] == "s3://mlpipeline/finetune/cats-vs-dogs/pipeline_root"
  assert kfp_launcher.dag_order(spec) == DAG_ORDER
  executors = spec["deploymentSpec"]["executors"]
  hooks = {name: sorted(e["container"].get("lifecycle", {})) for name, e in executors.items()}
  # Only the ExampleGen carries TFX's driver, and the open-source backend never runs it.
  assert {name: h for name, h in hooks.items() if h} == {"ImageExampleGen_executor": ["preCacheCheck"]}


def test_every_task_succeeds_and_the_first_push_has_no_baseline(store, first_run):
  assert list(first_run) == DAG_ORDER
  # Every task exits 0: none aborts after using S3.
  assert {name: r["returncode"] for name, r in first_run.items()} == dict.fromkeys(DAG_ORDER, 0)
  assert first_run["ImageExampleGen"]["skipped_hooks"] == ["preCacheCheck"]

  examples = first_run["ImageExampleGen"]["outputs"]["examples"]
  assert examples["uri"].startswith("s3://mlpipeline/finetune/cats-vs-dogs/pipeline_root/run-1/")
  report = _report(store, examples["uri"])
  assert report["examples"] == {split: {"cats": n, "dogs": n} for split, n in PER_SPLIT.items()}
  assert report["num_examples"] == 2 * sum(PER_SPLIT.values())
  assert [r["path"] for r in report["rejected"]] == ["train/cats/broken.jpg"]
  # What consumers were handed, after KFP's MLMD round trip.
  assert json.loads(examples["metadata"]["split_names"]) == ["train", "validation", "test"]
  assert examples["metadata"]["num_examples"] == report["num_examples"]

  verdict = _verdict(store, first_run)
  assert verdict["served_version"] is None and verdict["baseline_accuracy"] is None
  assert verdict["blessed"] is True

  pushed = first_run["Pusher"]["outputs"]["pushed_model"]["metadata"]
  assert pushed["pushed"] == 1
  version = pushed["pushed_version"]
  assert pushed["pushed_destination"] == f"{SERVING}/{version}"
  assert store.exists(f"{SERVING}/{version}/saved_model.pb")


def test_the_pushed_model_predicts_a_class_from_the_bucket(store, first_run, tmp_path):
  photo = tmp_path / "red.jpg"
  photo.write_bytes(image_bytes(CLASS_COLORS["cats"], seed=7))
  result = finetune(store, "predict", "--model", SERVING, str(photo))
  assert result.returncode == 0, result.stdout + result.stderr
  path, predicted, probability = result.stdout.strip().split("  ")
  assert path == str(photo) and predicted in {"cats", "dogs"}
  assert 0.5 <= float(probability) <= 1.0


def test_a_second_run_measures_the_served_model_as_its_baseline(store, first_run, second_run):
  assert {name: r["returncode"] for name, r in second_run.items()} == dict.fromkeys(DAG_ORDER, 0)
  first_version = int(first_run["Pusher"]["outputs"]["pushed_model"]["metadata"]["pushed_version"])
  verdict = _verdict(store, second_run)
  assert verdict["served_version"] == first_version
  assert 0.0 <= verdict["baseline_accuracy"] <= 1.0
  assert any(c["rule"] == "baseline" for c in verdict["checks"])


def test_the_keys_reach_no_package_log_or_report(store, compiled, first_run):
  package, _, compile_output, _ = compiled
  places = {"package": package.read_text(), "compile output": compile_output}
  for name, record in first_run.items():
    places[f"{name} log"] = pathlib.Path(record["log"]).read_text()
    places[f"{name} executor output"] = json.dumps(record["executor_output"])
  examples = first_run["ImageExampleGen"]["outputs"]["examples"]["uri"]
  places["ingestion report"] = json.dumps(_report(store, examples))
  places["verdict"] = json.dumps(_verdict(store, first_run))
  assert SECRET_NAME in places["package"]  # named, so the cluster can supply it
  for value in SECRETS[SECRET_NAME].values():
    leaked = [where for where, text in places.items() if value in text]
    assert not leaked, f"a planted key appears in {leaked}"


def test_without_the_secret_no_task_starts(compiled):
  package, spec, _, root = compiled
  with pytest.raises(TaskFailed, match=f"secret '{SECRET_NAME}' has no key"):
    kfp_launcher.run_task(spec, "ImageExampleGen", spec["defaultPipelineRoot"], "no-secret", {},
                          work_dir=str(root / "kfp"),
                          platform_spec=kfp_launcher.load_platform_spec(str(package)), secrets={})


def test_new_photos_cannot_hit_a_stale_example_gen_cache(store, compiled):
  """The backend caches on parameters alone; ImageExampleGen is compiled uncached."""
  _, spec, _, _ = compiled
  task = spec["root"]["dag"]["tasks"]["ImageExampleGen"]
  container = spec["deploymentSpec"]["executors"]["ImageExampleGen_executor"]["container"]

  def key(run_id):
    invocation = kfp_launcher.executor_input(spec, "ImageExampleGen", "/store", run_id, {})
    return kfp_launcher.cache_key(invocation, container)

  before = key("run-a")
  store.client.put_object(Bucket="photos", Key="cats_vs_dogs/train/dogs/new.jpg",
                          Body=image_bytes(CLASS_COLORS["dogs"], seed=99))
  try:
    after = key("run-b")
  finally:
    store.client.delete_object(Bucket="photos", Key="cats_vs_dogs/train/dogs/new.jpg")
  cached = task.get("cachingOptions", {}).get("enableCache", False)
  assert not cached or after != before, (
      "a rerun after new photos arrived would reuse the previous run's Examples")


def test_a_new_span_is_ingested_without_recompiling(store, tmp_path):
  """No driver runs on that backend: the executor finds the spans when it runs."""
  data, data_uri = tmp_path / "drops", "s3://photos/drops/cats_vs_dogs"
  counts = {"span-1": {"train": 2, "validation": 1, "test": 1},
            "span-2": {"train": 3, "validation": 1, "test": 1}}
  make_dataset(data / "span-1", counts["span-1"], variant="1")
  (data / "span-1" / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  store.upload(data / "span-1", f"{data_uri}/span-1")
  package = tmp_path / "pipeline.yaml"
  _compile(store, data_uri, package)  # once: a schedule runs one package
  spec = kfp_launcher.load_package(str(package))

  def ingest(run_id: str) -> dict:
    # ImageExampleGen is a root task: running it alone is what the run would do first.
    record = kfp_launcher.run_task(
        spec, "ImageExampleGen", spec["defaultPipelineRoot"], run_id, {},
        work_dir=str(tmp_path / "kfp"), secrets=SECRETS,
        platform_spec=kfp_launcher.load_platform_spec(str(package)))
    return _report(store, record["outputs"]["examples"]["uri"])

  report = ingest("span-run-1")
  assert report["num_examples"] == 2 * sum(counts["span-1"].values())
  assert [r["path"] for r in report["rejected"]] == ["span-1/train/cats/broken.jpg"]

  make_dataset(data / "span-2", counts["span-2"], variant="2")  # the next drop, same classes
  (data / "span-2" / "train" / "dogs" / "broken.jpg").write_bytes(b"not an image")
  store.upload(data / "span-2", f"{data_uri}/span-2")
  report = ingest("span-run-2")  # data.spans: all
  assert report["num_examples"] == 2 * sum(map(sum, (c.values() for c in counts.values())))
  assert report["spans"] == {"train": [1, 2], "validation": [1, 2], "test": [2]}
  assert [r["path"] for r in report["rejected"]] == ["span-1/train/cats/broken.jpg",
                                                     "span-2/train/dogs/broken.jpg"]

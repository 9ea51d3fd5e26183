"""The compiled Kubeflow package, run task by task as KFP's launcher runs it (tests/kfp_launcher.py).

No cluster: each task's exact command and arguments run here in a subprocess,
with the ExecutorInput the open-source KFP v2 driver would build (its
`executor-logs` output included), and around it what its launcher does: input
artifacts downloaded to the pod's local paths, outputs and the log uploaded,
the ExecutorOutput read back. The photos and the pipeline root are in a local
S3 server on 127.0.0.1 (moto), as on a cluster with MinIO: tasks get its
endpoint from the package and its keys from a "Kubernetes secret" named in the
package's platform spec; the launcher reaches it through the project's
kfp-launcher ConfigMap (deploy/kubeflow/kfp-launcher.yaml, endpoint pointed at
moto). Runs carry the package's defaultPipelineRoot as `finetune kubeflow
submit` sends it. Served models go to
s3://mlpipeline/finetune/<name>/serving/<name>/<version>/.

This process never loads tensorflow_io (it aborts at exit after S3 use): the
package is compiled by the `finetune` command, and objects are read with boto3.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import re

import boto3
import pytest
import yaml

from conftest import (CATS_VS_DOGS_SCHEMA, CLASS_COLORS, compile_args, image_bytes,
                      kubeflow_s3_settings, local_s3, make_dataset, tiny_overrides)
import kfp_launcher
from kfp_launcher import TaskFailed

IMAGE = "example/finetune:test"
PER_SPLIT = {"train": 12, "validation": 4, "test": 4}  # span-1, the first data drop
# The second drop, after the first run; its test photos are the next run's test split.
SPAN_2 = {"train": 3, "validation": 1, "test": 2}
DATA_URI = "s3://photos/cats_vs_dogs"
# The root DAG: the check, then one sub-DAG that runs only on new photos or settings.
ROOT_ORDER = ["NewDataCheck", "WhenNewData"]
GATED_ORDER = ["ImageExampleGen", "SchemaImporter", "SpanDrift", "StatisticsGen",
               "ExampleValidator", "DataGate", "Transform", "Trainer", "Evaluator", "BlessingGate",
               "Pusher", "RecordRun"]
TASK_ORDER = ["NewDataCheck"] + GATED_ORDER  # the tasks a run with new data runs, in order
CHANGE = "_NewDataCheck.change"  # the sub-DAG's input, which its condition reads
REGION = "us-east-1"
# The namespace's secret the package names; its values are planted to be looked for.
SECRET_NAME = "finetune-s3"
SECRETS = {SECRET_NAME: {"AWS_ACCESS_KEY_ID": "planted-key-id-7f3a",
                         "AWS_SECRET_ACCESS_KEY": "planted-s3cr3t-9c2e1b"},
           # What the launcher itself reads, named by the kfp-launcher ConfigMap.
           "mlpipeline-minio-artifact": {"accesskey": "planted-key-id-7f3a",
                                         "secretkey": "planted-s3cr3t-9c2e1b"}}
LAUNCHER_CONFIGMAP = kfp_launcher.REPO_ROOT / "deploy" / "kubeflow" / "kfp-launcher.yaml"
RUN_ROOT = "s3://mlpipeline/finetune/cats-vs-dogs/pipeline_root/cats-vs-dogs"
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class Store:
  """The local S3 server: its endpoint, and boto3 to seed and inspect it."""

  def __init__(self, endpoint: str):
    self.endpoint = endpoint
    self.client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                               **{k.lower(): v for k, v in SECRETS[SECRET_NAME].items()})

  @property
  def launcher_config(self) -> dict[str, str]:
    """The project's kfp-launcher ConfigMap data, its MinIO endpoint swapped for this one."""
    (configmap,) = [d for d in yaml.safe_load_all(LAUNCHER_CONFIGMAP.read_text()) if d]
    data = dict(configmap["data"])
    providers = yaml.safe_load(data["providers"])
    providers["s3"]["default"]["endpoint"] = self.endpoint.removeprefix("http://")
    data["providers"] = yaml.safe_dump(providers)
    return data

  @property
  def launcher(self) -> kfp_launcher.ObjectStore:
    root = self.launcher_config["defaultPipelineRoot"]
    return kfp_launcher.open_store(kfp_launcher.s3_session(self.launcher_config, root), SECRETS)

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
  with local_s3() as endpoint:
    yield Store(endpoint)


def finetune(store: Store, *args: str) -> subprocess.CompletedProcess:
  """The `finetune` command in its own process, with the user's S3 environment."""
  env = {**os.environ, **store.env, "TF_USE_LEGACY_KERAS": "1"}
  return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                        text=True, env=env, cwd=kfp_launcher.REPO_ROOT, timeout=600)


def _compile(store: Store, package: pathlib.Path) -> subprocess.CompletedProcess:
  # The tiny MobileNet: what is tested here is the wiring, not what the model learns.
  settings = tiny_overrides(DATA_URI, "s3://mlpipeline/finetune", **{
      "data.schema_path": str(CATS_VS_DOGS_SCHEMA), "kubeflow.image": IMAGE,
      # The second run pushes too, whatever this untrained model scores against the first.
      "evaluate.max_accuracy_drop": 1.0,
      **kubeflow_s3_settings(store.endpoint, REGION, SECRET_NAME)})
  args = compile_args(settings, package)
  result = finetune(store, *args)
  assert result.returncode == 0, result.stdout + result.stderr  # 134 would be the S3 abort
  return result


def _run(store: Store, package: pathlib.Path, work: pathlib.Path, run_id: str) -> dict[str, dict]:
  """A run as `finetune kubeflow submit` creates it: the package's root in its runtime config."""
  spec = kfp_launcher.load_package(str(package))
  return kfp_launcher.run_package(str(package), run_id, work_dir=str(work / run_id),
                                  pipeline_root=spec["defaultPipelineRoot"],
                                  launcher_config=store.launcher_config, secrets=SECRETS)


def _tasks(run: dict[str, dict]) -> dict[str, dict]:
  """A run's task records, without the sub-DAG's own record."""
  return {name: record for name, record in run.items() if not record.get("dag")}


def _log(record: dict) -> str:
  return pathlib.Path(record["log"]).read_text()


def _served_versions(store: Store) -> list[str]:
  keys = store.client.list_objects_v2(Bucket="mlpipeline", Prefix=SERVING.removeprefix(
      "s3://mlpipeline/") + "/").get("Contents", [])
  return sorted({k["Key"].split("/")[4] for k in keys})


def _report(store: Store, examples_uri: str) -> dict:
  return json.loads(store.read(f"{examples_uri}/ingestion/report.json"))


def _verdict(store: Store, run: dict) -> dict:
  return json.loads(store.read(f"{run['BlessingGate']['outputs']['blessing']['uri']}/verdict.json"))


@pytest.fixture(scope="module")
def compiled(store, tmp_path_factory):
  """(package path, spec, compile output, work folder) for a first data drop of tiny
  photos in split folders, s3://photos/cats_vs_dogs/span-1, one of them broken."""
  root = tmp_path_factory.mktemp("kfp_launcher")
  data = make_dataset(root / "cats_vs_dogs" / "span-1", PER_SPLIT)
  (data / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  store.upload(data, f"{DATA_URI}/span-1")
  package = root / "pipeline.yaml"
  result = _compile(store, package)
  return package, kfp_launcher.load_package(str(package)), result.stdout + result.stderr, root


@pytest.fixture(scope="module")
def first_run(store, compiled):
  package, _, _, root = compiled
  return _run(store, package, root / "kfp", "run-1")


@pytest.fixture(scope="module")
def second_run(store, compiled, first_run):
  """The same package again after the next data drop arrived (span-2, one of its
  photos broken), as a schedule would run it: nothing recompiled."""
  package, _, _, root = compiled
  data = make_dataset(root / "cats_vs_dogs" / "span-2", SPAN_2, variant="2")
  (data / "train" / "dogs" / "broken.jpg").write_bytes(b"not an image")
  store.upload(data, f"{DATA_URI}/span-2")
  return _run(store, package, root / "kfp", "run-2")


@pytest.fixture(scope="module")
def third_run(store, compiled, second_run):
  """Once more with no new photos."""
  package, _, _, root = compiled
  return _run(store, package, root / "kfp", "run-3")


SERVING = "s3://mlpipeline/finetune/cats-vs-dogs/serving/cats-vs-dogs"


def test_the_package_runs_in_dag_order_with_the_driver_hook_skipped(compiled):
  package, spec, _, _ = compiled
  assert spec["defaultPipelineRoot"] == "s3://mlpipeline/finetune/cats-vs-dogs/pipeline_root"
  assert kfp_launcher.dag_order(spec) == ROOT_ORDER
  gated = spec["components"]["WhenNewData"]["dag"]["tasks"]
  assert kfp_launcher.dag_order(spec, gated) == GATED_ORDER
  # The condition sits on the DAG task alone: no task inside waits on a skipped one.
  assert spec["root"]["dag"]["tasks"]["WhenNewData"]["triggerPolicy"]["condition"] == (
      f"(inputs.artifacts['{CHANGE}'].artifacts[0].metadata['new_data'] == 1.0)")
  assert not [name for name, task in gated.items() if "triggerPolicy" in task]
  executors = spec["deploymentSpec"]["executors"]
  hooks = {name: sorted(e["container"].get("lifecycle", {})) for name, e in executors.items()}
  # Only the ExampleGen carries TFX's driver, and the open-source backend never runs it.
  assert {name: h for name, h in hooks.items() if h} == {"ImageExampleGen_executor": ["preCacheCheck"]}


def test_every_task_succeeds_and_the_first_push_has_no_baseline(store, first_run):
  assert list(_tasks(first_run)) == TASK_ORDER
  assert first_run["WhenNewData"]["triggered"] is True
  # Every task exits 0: none aborts after using S3.
  assert {name: r["returncode"] for name, r in _tasks(first_run).items()} == dict.fromkeys(
      TASK_ORDER, 0)
  assert "No finished run recorded yet: training" in _log(first_run["NewDataCheck"])
  # Beam runs in the task (DirectRunner): no task packages TFX for remote workers.
  assert [name for name, r in _tasks(first_run).items()
          if "Creating temporary sdist package" in _log(r)] == []
  assert first_run["ImageExampleGen"]["skipped_hooks"] == ["preCacheCheck"]

  examples = first_run["ImageExampleGen"]["outputs"]["examples"]
  # driver.go: <run's root>/<pipeline>/<run id>/<task>/<uuid>/<key>.
  assert re.fullmatch(f"{RUN_ROOT}/run-1/ImageExampleGen/{UUID}/examples", examples["uri"])
  report = _report(store, examples["uri"])
  assert report["examples"] == {split: {"cats": n, "dogs": n} for split, n in PER_SPLIT.items()}
  assert report["num_examples"] == 2 * sum(PER_SPLIT.values())
  assert [r["path"] for r in report["rejected"]] == ["span-1/train/cats/broken.jpg"]
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
  assert {name: r["returncode"] for name, r in _tasks(second_run).items()} == dict.fromkeys(
      TASK_ORDER, 0)
  assert "New photos or settings since the last finished run" in (
      _log(second_run["NewDataCheck"]))
  # No driver runs on that backend: the executor found the new span when it ran.
  report = _report(store, second_run["ImageExampleGen"]["outputs"]["examples"]["uri"])
  assert report["spans"] == {"train": [1, 2], "validation": [1, 2], "test": [2]}
  # The newest span is the test split; older spans' test photos join training.
  assert report["examples"] == {split: {"cats": n, "dogs": n} for split, n in {
      "train": PER_SPLIT["train"] + PER_SPLIT["test"] + SPAN_2["train"],
      "validation": PER_SPLIT["validation"] + SPAN_2["validation"], "test": SPAN_2["test"]}.items()}
  assert [r["path"] for r in report["rejected"]] == ["span-1/train/cats/broken.jpg",
                                                     "span-2/train/dogs/broken.jpg"]
  first_version = int(first_run["Pusher"]["outputs"]["pushed_model"]["metadata"]["pushed_version"])
  verdict = _verdict(store, second_run)
  assert verdict["served_version"] == first_version
  assert 0.0 <= verdict["baseline_accuracy"] <= 1.0
  assert any(c["rule"] == "baseline" for c in verdict["checks"])


def test_a_run_with_nothing_new_trains_nothing_and_pushes_nothing(store, second_run, third_run):
  before = _served_versions(store)
  assert list(third_run) == ROOT_ORDER and third_run["WhenNewData"]["triggered"] is False
  assert third_run["NewDataCheck"]["returncode"] == 0
  # The last task that ran says so in its log.
  assert re.search(r"No new data: span 1, 2 already seen by the run that finished [0-9-]+ [0-9:]+, "
                   r"settings unchanged; nothing to retrain or push\.",
                   _log(third_run["NewDataCheck"])), _log(third_run["NewDataCheck"])
  assert _served_versions(store) == before and len(before) == 2  # the two earlier pushes
  record = json.loads(store.read("s3://mlpipeline/finetune/cats-vs-dogs/last_run.json"))
  assert record["key"] == third_run["NewDataCheck"]["outputs"]["change"]["metadata"]["run_key"]


def test_the_keys_reach_no_package_log_or_report(store, compiled, first_run):
  package, _, compile_output, _ = compiled
  places = {"package": package.read_text(), "compile output": compile_output}
  for name, record in _tasks(first_run).items():
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
    kfp_launcher.run_task(spec, "ImageExampleGen", f"{RUN_ROOT}/no-secret", {},
                          work_dir=str(root / "kfp" / "no-secret"),
                          platform_spec=kfp_launcher.load_platform_spec(str(package)), secrets={})


def test_every_task_gets_the_drivers_log_output_and_ignores_it(store, first_run):
  """KFP >= 2.5 adds executor-logs (system.Artifact) to every task; TFX must not see it."""
  for name, record in _tasks(first_run).items():
    outputs = record["executor_input"]["outputs"]["artifacts"]
    logs = outputs[kfp_launcher.LOGS_KEY]["artifacts"][0]
    assert logs["type"] == {"schemaTitle": "system.Artifact"}, name
    assert all(a["artifacts"][0]["name"] == key for key, a in outputs.items()), name
    # The launcher uploaded the task's output as the log artifact, under the task root.
    uri = record["outputs"][kfp_launcher.LOGS_KEY]["uri"]
    assert re.fullmatch(f"{RUN_ROOT}/run-1/{name}/{UUID}/executor-logs", uri), uri
    assert store.read(uri).decode() == pathlib.Path(record["log"]).read_text()
    # TFX reported its own outputs only.
    assert kfp_launcher.LOGS_KEY not in (record["executor_output"] or {}).get("artifacts", {})


def test_inputs_are_downloaded_to_the_pod_and_every_output_is_written(first_run):
  trainer = first_run["Trainer"]
  inputs = trainer["executor_input"]["inputs"]["artifacts"]
  assert set(trainer["downloaded"]) == set(inputs)
  for name, path in trainer["downloaded"].items():
    uri = inputs[name]["artifacts"][0]["uri"]
    # launcher_v2.go LocalPathForURI: s3://bucket/key -> /s3/bucket/key, in the pod.
    assert path == f"{trainer['pod']}/s3/{uri.removeprefix('s3://')}"
    assert any(p.is_file() for p in pathlib.Path(path).rglob("*")), name
  # The executor output file is in the task root's local path (driver.go provisionOutputs).
  output_file = trainer["executor_input"]["outputs"]["outputFile"]
  assert re.fullmatch(f"{trainer['pod']}/s3/.*/Trainer/{UUID}/output_metadata.json", output_file)
  # The launcher records a declared output nobody wrote, and its consumers then download
  # nothing. Some of ours stay empty by design (e.g. Transform's unused analyzer cache);
  # every consumed one is written (the Pusher's pushed_model holds push.json for RecordRun).
  consumed = {a["artifacts"][0]["uri"] for r in _tasks(first_run).values()
              for a in r["executor_input"]["inputs"]["artifacts"].values()}
  empty = {(name, key) for name, r in _tasks(first_run).items() for key in r["unwritten_outputs"]
           if r["outputs"][key]["uri"] in consumed}
  assert empty == set()


def test_new_photos_cannot_hit_a_stale_example_gen_cache(store, compiled):
  """The backend caches on parameters alone; ImageExampleGen is compiled uncached."""
  _, spec, _, _ = compiled
  task = kfp_launcher.find_task(spec, "ImageExampleGen")
  container = spec["deploymentSpec"]["executors"]["ImageExampleGen_executor"]["container"]
  change = {CHANGE: {"artifacts": [{"name": "1", "uri": f"{RUN_ROOT}/run-a/NewDataCheck/change",
                                    "metadata": {"new_data": 1.0}}]}}

  def key(run_id):
    invocation = kfp_launcher.executor_input(spec, "ImageExampleGen", f"{RUN_ROOT}/{run_id}", {},
                                             dag_inputs=change)
    return kfp_launcher.cache_key(invocation, container)

  before = key("run-a")
  new_photo = "cats_vs_dogs/span-1/train/dogs/new.jpg"
  store.client.put_object(Bucket="photos", Key=new_photo,
                          Body=image_bytes(CLASS_COLORS["dogs"], seed=99))
  try:
    after = key("run-b")
  finally:
    store.client.delete_object(Bucket="photos", Key=new_photo)
  cached = task.get("cachingOptions", {}).get("enableCache", False)
  assert not cached or after != before, (
      "a rerun after new photos arrived would reuse the previous run's Examples")


# The driver's and launcher's rules on a two-task package of plain commands (fast).

def _toy_spec(write_output: bool) -> dict:
  """make -> use: `make` declares `data` and writes it to its local path (or not);
  `use` copies what the launcher downloaded for it to its own output."""
  writes = "mkdir -p {0} && echo made > {0}/part-0" if write_output else "true"
  output = {"data": {"artifactType": {"schemaTitle": "system.Dataset"}}}
  return {
      "pipelineInfo": {"name": "toy"},
      "defaultPipelineRoot": "s3://never/read",
      "root": {"dag": {"tasks": {
          "make": {"componentRef": {"name": "comp-make"}, "taskInfo": {"name": "make"}},
          "use": {"componentRef": {"name": "comp-use"}, "taskInfo": {"name": "use"},
                  "dependentTasks": ["make"],
                  "inputs": {"artifacts": {"data": {"taskOutputArtifact": {
                      "producerTask": "make", "outputArtifactKey": "data"}}}}}}}},
      "components": {
          "comp-make": {"executorLabel": "exec-make", "outputDefinitions": {"artifacts": output}},
          "comp-use": {"executorLabel": "exec-use",
                       "inputDefinitions": {"artifacts": output},
                       "outputDefinitions": {"artifacts": {"copy": output["data"]}}}},
      "deploymentSpec": {"executors": {
          "exec-make": {"container": {"image": "alpine", "command": ["sh", "-c", writes.format(
              "{{$.outputs.artifacts['data'].path}}")]}},
          "exec-use": {"container": {"image": "alpine", "command": ["sh", "-c", (
              "ls {{$.inputs.artifacts['data'].path}} && mkdir -p "
              "{{$.outputs.artifacts['copy'].path}} && cp -r {{$.inputs.artifacts['data'].path}}/. "
              "{{$.outputs.artifacts['copy'].path}}/ 2>/dev/null; true")]}}}},
  }


def _toy_run(store, tmp_path, write_output: bool) -> dict[str, dict]:
  spec = _toy_spec(write_output)
  package = tmp_path / "toy.yaml"
  package.write_text(yaml.safe_dump(spec))
  return kfp_launcher.run_package(str(package), "toy-run", work_dir=str(tmp_path),
                                  pipeline_root="s3://mlpipeline/toy",
                                  launcher_config=store.launcher_config, secrets=SECRETS)


def test_the_launcher_downloads_inputs_and_uploads_outputs(store, tmp_path):
  run = _toy_run(store, tmp_path, write_output=True)
  data = run["make"]["outputs"]["data"]["uri"]
  assert re.fullmatch(f"s3://mlpipeline/toy/toy/toy-run/make/{UUID}/data", data)
  assert store.read(f"{data}/part-0") == b"made\n"  # uploaded from the pod's /s3/... path
  assert run["use"]["downloaded"]["data"].endswith(f"/s3/{data.removeprefix('s3://')}")
  assert store.read(f"{run['use']['outputs']['copy']['uri']}/part-0") == b"made\n"
  assert "part-0" in store.read(run["use"]["outputs"]["executor-logs"]["uri"]).decode()
  assert run["make"]["unwritten_outputs"] == [] and run["use"]["unwritten_outputs"] == []


def test_a_declared_output_nobody_writes_is_recorded_not_failed(store, tmp_path):
  """launcher_v2.go uploadOutputArtifacts: a missing local path is a warning, and the
  artifact is recorded; its consumer downloads nothing and runs."""
  run = _toy_run(store, tmp_path, write_output=False)
  assert run["make"]["returncode"] == 0 and run["make"]["unwritten_outputs"] == ["data"]
  assert not store.exists(run["make"]["outputs"]["data"]["uri"])
  assert run["use"]["returncode"] == 0
  assert not pathlib.Path(run["use"]["downloaded"]["data"]).exists()


def test_the_pipeline_root_comes_from_the_run_then_the_configmap_never_the_package(store):
  config = store.launcher_config
  assert kfp_launcher.resolve_pipeline_root("s3://run/root", config) == "s3://run/root"
  assert kfp_launcher.resolve_pipeline_root(None, config) == "s3://mlpipeline/v2/artifacts"
  assert kfp_launcher.resolve_pipeline_root(None, None) == "minio://mlpipeline/v2/artifacts"
  spec = _toy_spec(True)
  invocation = kfp_launcher.executor_input(
      spec, "make", kfp_launcher.run_root(kfp_launcher.resolve_pipeline_root(None, None),
                                          "toy", "r1"), {})
  uri = invocation["outputs"]["artifacts"]["data"]["artifacts"][0]["uri"]
  assert uri.startswith("minio://mlpipeline/v2/artifacts/toy/r1/make/")  # TensorFlow cannot write


def test_a_root_the_launcher_has_no_local_path_for_fails_the_task(tmp_path):
  spec = _toy_spec(True)
  with pytest.raises(TaskFailed, match="failed to generate local storage path"):
    kfp_launcher.run_task(spec, "make", str(tmp_path / "root"), {}, work_dir=str(tmp_path))


def test_a_provider_key_s3_go_does_not_read_is_refused(store):
  config = store.launcher_config
  providers = yaml.safe_load(config["providers"])
  providers["s3"]["default"]["disableSsl"] = True  # s3.go's tag is disableSSL
  with pytest.raises(ValueError, match=r"reads no \['disableSsl'\]"):
    kfp_launcher.s3_session({**config, "providers": yaml.safe_dump(providers)}, "s3://b/k")

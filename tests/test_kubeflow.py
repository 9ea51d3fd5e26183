"""The Kubeflow package, image and CLI, checked against KFP's own spec and tools (no cluster here)."""
import json
import os
import re
import subprocess
import sys

import yaml

from click.testing import CliRunner
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT, load_config
from kfp_stub import API
from pipeline.kubeflow_runner import read_package
from pipeline.pipeline import create_pipeline
from conftest import CATS_VS_DOGS_SCHEMA

IMAGE = "registry.example.com/finetune:1.0"
DOCKERFILE = PROJECT_ROOT / "deploy" / "kubeflow" / "Dockerfile"
LAUNCHER_CONFIGMAP = PROJECT_ROOT / "deploy" / "kubeflow" / "kfp-launcher.yaml"
# The Kubernetes version whose API schemas manifests are validated against
# (as tests/test_deploy_serving.py).
K8S_VERSION = "1.33.0"
# The oldest pipeline spec the package must parse with: kfp-pipeline-spec 0.4.0 added
# the string resource fields (resourceCpuLimit, ...) the Trainer's resources use.
OLDEST_PIPELINE_SPEC = "0.4.0"
DATA_ROOT = "s3://photos/cats_vs_dogs"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """`finetune kubeflow compile` on tiny photos: (config, package path, CLI output)."""
  root = tmp_path_factory.mktemp("kubeflow")
  data = DATA_ROOT  # compiling reads no data: the tasks find the layout when they run
  package = root / "pipeline.yaml"
  result = CliRunner().invoke(main, [
      "kubeflow", "compile", "--image", IMAGE, "--pipeline-root", "s3://mlpipeline/finetune",
      "--data-root", data, "--weights", "none", "--output", str(package),
      "--set", "kubeflow.trainer_cpu=8", "--set", "kubeflow.trainer_memory=24G",
      "--set", "kubeflow.trainer_gpus=1", "--beam-arg=--direct_num_workers=2"])
  assert result.exit_code == 0, result.output
  config = load_config(None, {"data.root": data, "train.weights": "none"}).validate()
  return config, package, result.output


def _spec(package) -> pipeline_spec_pb2.PipelineSpec:
  # Strict: an unknown or misspelt field fails the parse.
  return json_format.ParseDict(read_package(str(package))[0],
                               pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)


def test_the_package_is_a_strict_kfp_2_1_spec_of_the_local_pipeline(compiled):
  config, package, output = compiled
  spec = _spec(package)
  assert spec.schema_version == "2.1.0"
  assert spec.pipeline_info.name == "cats-vs-dogs"
  # NewDataCheck, then one sub-DAG of every other task, run only when it finds something new.
  assert set(spec.root.dag.tasks) == {"NewDataCheck", "WhenNewData"}
  gated = spec.components["WhenNewData"].dag.tasks
  tasks = {**spec.root.dag.tasks, **gated}
  del tasks["WhenNewData"]
  assert f"Compiled cats-vs-dogs: {len(tasks)} tasks, schema 2.1.0 -> {package}" in output
  # The same components and edges as the pipeline the local runner runs.
  local = create_pipeline(config, CATS_VS_DOGS_SCHEMA.read_text(), "schemas/cats-vs-dogs.pbtxt")
  assert set(tasks) == {c.id for c in local.components}
  for component in local.components:
    upstream = {n.id for n in component.upstream_nodes}
    if component.id in gated:  # NewDataCheck is the sub-DAG's dependency, not its tasks'
      upstream -= {"NewDataCheck"}
    assert set(tasks[component.id].dependent_tasks) == upstream, component.id
  assert "latest_blessed_model_resolver" not in tasks
  # Tasks that read the world outside the pipeline are never served from the cache.
  uncached = {name for name, task in tasks.items() if not task.caching_options.enable_cache}
  assert uncached == {"NewDataCheck", "ImageExampleGen", "BlessingGate", "Pusher", "RecordRun"}


_STRICT_PARSE = """
import importlib.util, json, sys
from google.protobuf import json_format
# By file: a `kfp` package elsewhere on the path would shadow this one's.
spec = importlib.util.spec_from_file_location("pipeline_spec_pb2", sys.argv[1])
pb2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb2)
json_format.ParseDict(json.load(sys.stdin), pb2.PipelineSpec(), ignore_unknown_fields=False)
"""


def test_the_package_parses_strictly_with_the_oldest_supported_pipeline_spec(compiled, tmp_path):
  """What a backend built on kfp-pipeline-spec 0.4.0 parses; 0.3.0 has no string resources."""
  _, package, _ = compiled
  target = tmp_path / "pipeline_spec"
  uv = os.path.join(os.path.dirname(sys.executable), "uv")
  fetched = subprocess.run(
      [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target),
       f"kfp-pipeline-spec=={OLDEST_PIPELINE_SPEC}"], capture_output=True, text=True, timeout=300)
  if fetched.returncode != 0:
    message = f"cannot fetch kfp-pipeline-spec {OLDEST_PIPELINE_SPEC}: {fetched.stderr.strip()}"
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  pb2 = target / "kfp" / "pipeline_spec" / "pipeline_spec_pb2.py"
  result = subprocess.run([sys.executable, "-c", _STRICT_PARSE, str(pb2)],
                          input=json.dumps(read_package(str(package))[0]), capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr


def test_every_task_runs_the_project_image_and_no_resolver(compiled):
  _, package, _ = compiled
  spec = _spec(package)
  deployment = json_format.MessageToDict(spec.deployment_spec)
  executors = deployment["executors"]
  # One executor per task: the root's check, and the sub-DAG's tasks.
  assert len(executors) == 1 + len(spec.components["WhenNewData"].dag.tasks)
  for name, executor in executors.items():
    assert set(executor) == {"container"}, name  # no importer, no resolver
    container = executor["container"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "pipeline.kfp_executor"]
    assert container["args"][0] == "--executor_class_path"
  trainer = executors["Trainer_executor"]["container"]["resources"]
  assert trainer["resourceCpuLimit"] == "8" and trainer["resourceMemoryLimit"] == "24G"
  assert trainer["accelerator"] == {"resourceType": "nvidia.com/gpu", "resourceCount": "1"}


def test_settings_reach_the_tasks(compiled):
  _, package, _ = compiled
  text = package.read_text()
  # The Beam arguments (with the safe DirectRunner mode added), the pipeline root in
  # object storage, the push destination under it, and the schema's own text.
  assert "--direct_num_workers=2" in text and "--direct_running_mode=in_memory" in text
  assert "s3://mlpipeline/finetune/cats-vs-dogs/pipeline_root" in text
  assert "s3://mlpipeline/finetune/cats-vs-dogs/serving/cats-vs-dogs" in text
  spec = read_package(str(package))[0]
  schema_param = (spec["components"]["WhenNewData"]["dag"]["tasks"]["SchemaImporter"]["inputs"]["parameters"]
                  ["schema_text"]["runtimeValue"]["constant"])
  assert schema_param == CATS_VS_DOGS_SCHEMA.read_text()


def test_compile_errors_are_one_line(tmp_path):
  base = ["kubeflow", "compile", "--data-root", DATA_ROOT, "--weights", "none"]
  for args, message in (
      ([], "Error: kubeflow.image is not set: pass --image"),
      (["--image", IMAGE, "--output", str(tmp_path / "p.json")],
       f"Error: --output {tmp_path / 'p.json'}: a Kubeflow package is a .yaml or .yml file"),
      (["--image", IMAGE, "--pipeline-name", "cats_vs_dogs"],
       "Error: pipeline_name 'cats_vs_dogs' is not allowed")):
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2 and result.output.startswith(message), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_s3_keys_come_from_a_kubernetes_secret_by_name(compiled):
  """s3:// pipeline root: every task gets the endpoint, and the keys by the secret's name."""
  _, package, _ = compiled
  spec, platform = read_package(str(package))
  parsed = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(),
                                 ignore_unknown_fields=False)
  executors = parsed.platforms["kubernetes"].deployment_spec.executors
  assert set(executors) == set(spec["deploymentSpec"]["executors"])
  for name, config in executors.items():
    assert json_format.MessageToDict(config)["secretAsEnv"] == [{
        "secretName": "mlpipeline-minio-artifact",
        "keyToEnv": [{"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
                     {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]}]
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][name]["container"]["env"]}
    assert env == {"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000", "AWS_REGION": "us-east-1"}


def _compile_to(tmp_path, pipeline_root: str, data_root: str = DATA_ROOT):
  """`finetune kubeflow compile` of two tiny classes to `pipeline_root`: (package, output)."""
  package = tmp_path / "pipeline.yaml"
  result = CliRunner().invoke(main, ["kubeflow", "compile", "--image", IMAGE, "--data-root",
                                     data_root, "--weights", "none", "--output", str(package),
                                     "--pipeline-root", pipeline_root])
  assert result.exit_code == 0, result.output
  return package, result.output


def test_a_package_without_object_storage_has_no_platform_spec(tmp_path):
  package, _ = _compile_to(tmp_path, "gs://bucket/finetune", "gs://bucket/photos/cats_vs_dogs")
  spec, platform = read_package(str(package))
  assert platform is None
  assert all("env" not in e["container"] for e in spec["deploymentSpec"]["executors"].values())


def test_no_secret_reaches_the_package(tmp_path, monkeypatch):
  secret = "s3cr3t-planted-key-9f8e7d"
  monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
  monkeypatch.setenv("AWS_ACCESS_KEY_ID", secret + "-id")
  package, output = _compile_to(tmp_path, "s3://mlpipeline/finetune")
  assert secret not in package.read_text() and secret not in output


def test_dockerfile_passes_hadolint():
  hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
  result = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_lock_and_copies_every_executor_package(compiled):
  _, package, _ = compiled
  dockerfile = DOCKERFILE.read_text()
  # The base is a build argument; its default a pinned image of the venv's Python.
  assert re.search(r"^FROM \$\{BASE_IMAGE\}", dockerfile, re.M)
  base = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.M).group(1)
  assert re.fullmatch(r"python:3\.11\.\d+-[a-z-]+", base)
  # The lock, from the wheelhouse alone: no compiler and no registry in the build.
  assert "COPY requirements.lock" in dockerfile
  assert re.search(r"pip install --ignore-requires-python --no-deps -r requirements\.lock"
                   r"[\s\\]+--no-index --find-links", dockerfile)
  assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M)  # not root
  copied = set(re.findall(r"^COPY (\w+)/", dockerfile, re.M))
  spec = read_package(str(package))[0]
  class_paths = {e["container"]["args"][1] for e in spec["deploymentSpec"]["executors"].values()}
  locked = {line.split("==")[0].lower().replace("-", "_")
            for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line}
  for class_path in class_paths:
    top = class_path.split(".")[0]
    assert top in copied or top in locked, class_path
  # And the Python path makes the copied packages importable as the executors name them.
  assert "PYTHONPATH=/opt/finetune" in dockerfile and "WORKDIR /opt/finetune" in dockerfile


def test_the_compiled_package_submits_and_schedules_from_the_command_line(compiled):
  from kfp_stub import running
  _, package, _ = compiled
  with running() as stub:
    host = ["--host", stub.url, "--experiment", "nightly", "--token", "planted-token-4e1f"]
    result = CliRunner().invoke(main, ["kubeflow", "submit", str(package), *host])
    assert result.exit_code == 0, result.output
    (run_id,) = stub.runs
    assert f"Run {run_id}: {stub.url}/#/runs/details/{run_id}" in result.output
    assert stub.packages and list(stub.packages.values())[0] == package.read_bytes()
    # The backend ignores the package's defaultPipelineRoot: the run carries it.
    root = read_package(str(package))[0]["defaultPipelineRoot"]
    assert root == "s3://mlpipeline/finetune/cats-vs-dogs/pipeline_root"
    assert stub.pipeline_root(stub.runs[run_id]) == root
    result = CliRunner().invoke(main, ["kubeflow", "submit", str(package), *host,
                                       "--pipeline-root", "s3://mlpipeline/elsewhere"])
    assert result.exit_code == 0, result.output
    assert stub.pipeline_root(stub.find("POST", f"{API}/runs")[-1].body) == \
        "s3://mlpipeline/elsewhere"

    # A five-field cron is refused before anything is sent; six fields schedule.
    sent = len(stub.requests)
    result = CliRunner().invoke(main, ["kubeflow", "schedule", str(package), *host,
                                       "--cron", "0 3 * * *"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert '"0 0 3 * * *"' in result.output and len(stub.requests) == sent
    result = CliRunner().invoke(main, ["kubeflow", "schedule", str(package), *host,
                                       "--cron", "0 0 3 * * *"])
    assert result.exit_code == 0, result.output
    assert len(stub.recurring_runs) == 1
    (recurring,) = stub.recurring_runs.values()
    assert recurring["no_catchup"] is True  # the default: one run after a pause
    assert stub.pipeline_root(recurring) == root
    result = CliRunner().invoke(main, ["kubeflow", "schedules", "--host", stub.url])
    assert "0 0 3 * * *  enabled  max concurrency 1" in result.output
    assert all("planted-token-4e1f" not in r.output for r in [result])
    assert any(r.headers.get("authorization") == "Bearer planted-token-4e1f"
               for r in stub.requests)
    result = CliRunner().invoke(main, ["kubeflow", "schedule", str(package), *host,
                                       "--cron", "0 0 4 * * *", "--catchup", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"no_catchup": false' in result.output


def _launcher_configmap() -> dict:
  (doc,) = [d for d in yaml.safe_load_all(LAUNCHER_CONFIGMAP.read_text()) if d]
  return doc


def test_the_launcher_configmap_is_a_valid_kubernetes_configmap():
  kubernetes_validate = pytest.importorskip("kubernetes_validate")
  doc = _launcher_configmap()
  kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
  # config/env.go: the driver and launcher read this name in the run's namespace.
  assert doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "kfp-launcher"
  assert "namespace" not in doc["metadata"]  # applied with -n to the runs' namespace


def test_the_launcher_configmap_says_what_the_backend_reads():
  data = _launcher_configmap()["data"]
  # config/env.go: the two keys read from the ConfigMap's data.
  assert set(data) == {"defaultPipelineRoot", "providers"}
  assert data["defaultPipelineRoot"].startswith("s3://")  # not minio://: TensorFlow writes it
  providers = yaml.safe_load(data["providers"])
  # config/env.go BucketProviders: json tags minio, s3, gs.
  assert set(providers) <= {"minio", "s3", "gs"} and "s3" in providers
  # config/s3.go: S3ProviderConfig {default, Overrides}; S3ProviderDefault {endpoint,
  # credentials, region, disableSSL, forcePathStyle, maxRetries}; S3Credentials {fromEnv,
  # secretRef}; S3SecretRef {secretName, accessKeyKey, secretKeyKey}. Go ignores other
  # keys silently, so a misspelt one would only show as a failed run.
  assert set(providers["s3"]) <= {"default", "Overrides"}
  default = providers["s3"]["default"]
  assert set(default) <= {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle",
                          "maxRetries"}
  assert set(default["credentials"]) <= {"fromEnv", "secretRef"}
  assert set(default["credentials"]["secretRef"]) == {"secretName", "accessKeyKey",
                                                      "secretKeyKey"}
  # A standard install's MinIO and its secret (config/env.go: mlpipeline-minio-artifact,
  # keys accesskey/secretkey), reached over http with path-style buckets.
  assert default["endpoint"] == "minio-service.kubeflow:9000"
  assert default["disableSSL"] is True and default["forcePathStyle"] is True
  assert default["credentials"] == {"fromEnv": False, "secretRef": {
      "secretName": "mlpipeline-minio-artifact", "accessKeyKey": "accesskey",
      "secretKeyKey": "secretkey"}}
  # And it is the session the harness's launcher opens (tests/kfp_launcher.py, s3.go rules).
  import kfp_launcher
  session = kfp_launcher.s3_session(data, data["defaultPipelineRoot"])
  assert session["secretName"] == "mlpipeline-minio-artifact" and not session["fromEnv"]


def test_the_entrypoint_passes_tfx_only_the_components_outputs():
  """KFP >= 2.5's driver adds executor-logs (system.Artifact), which TFX cannot import."""
  from pipeline.kfp_executor import INVOCATION, without_backend_outputs
  examples = {"artifacts": [{"name": "examples", "uri": "s3://b/t/u/examples",
                             "type": {"schemaTitle": "tfx.Examples"}}]}
  logs = {"artifacts": [{"name": "executor-logs", "uri": "s3://b/t/u/executor-logs",
                         "type": {"schemaTitle": "system.Artifact"}}]}
  invocation = {"outputs": {"artifacts": {"examples": examples, "executor-logs": logs},
                            "outputFile": "/tmp/out.json"}}
  argv = ["--executor_class_path", "x.Executor", INVOCATION, json.dumps(invocation)]
  passed = json.loads(without_backend_outputs(argv)[3])
  assert passed["outputs"]["artifacts"] == {"examples": examples}
  assert passed["outputs"]["outputFile"] == "/tmp/out.json"
  untouched = ["--executor_class_path", "x.Executor", INVOCATION,
               json.dumps({"outputs": {"artifacts": {"examples": examples}}})]
  assert without_backend_outputs(untouched) == untouched

"""The Kubeflow package, image and CLI, checked against KFP's own spec and tools (no cluster here)."""
import json
import os
import re
import subprocess
import sys

from click.testing import CliRunner
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.kubeflow_runner import read_package
from pipeline.pipeline import create_pipeline
from conftest import CATS_VS_DOGS_SCHEMA, make_dataset, tiny_overrides

IMAGE = "registry.example.com/finetune:1.0"
DOCKERFILE = PROJECT_ROOT / "deploy" / "kubeflow" / "Dockerfile"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """`finetune kubeflow compile` on tiny photos: (config, package path, CLI output)."""
  root = tmp_path_factory.mktemp("kubeflow")
  data = make_dataset(root / "cats_vs_dogs", {"train": 2, "validation": 1, "test": 1})
  package = root / "pipeline.yaml"
  result = CliRunner().invoke(main, [
      "kubeflow", "compile", "--image", IMAGE, "--pipeline-root", "s3://mlpipeline/finetune",
      "--data-root", str(data), "--weights", "none", "--output", str(package),
      "--set", "kubeflow.trainer_cpu=8", "--set", "kubeflow.trainer_memory=24G",
      "--set", "kubeflow.trainer_gpus=1", "--beam-arg=--direct_num_workers=2"])
  assert result.exit_code == 0, result.output
  config = load_config(None, {"data.root": str(data), "train.weights": "none"}).validate()
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
  tasks = spec.root.dag.tasks
  assert f"Compiled cats-vs-dogs: {len(tasks)} tasks, schema 2.1.0 -> {package}" in output
  # The same components and edges as the pipeline the local runner runs.
  local = create_pipeline(config)
  assert set(tasks) == {c.id for c in local.components}
  for component in local.components:
    assert set(tasks[component.id].dependent_tasks) == {n.id for n in component.upstream_nodes}
  assert "latest_blessed_model_resolver" not in tasks
  # Tasks that read the world outside the pipeline are never served from the cache.
  uncached = {name for name, task in tasks.items() if not task.caching_options.enable_cache}
  assert uncached == {"ImageExampleGen", "BlessingGate", "Pusher"}


def test_every_task_runs_the_project_image_and_no_resolver(compiled):
  _, package, _ = compiled
  spec = _spec(package)
  deployment = json_format.MessageToDict(spec.deployment_spec)
  executors = deployment["executors"]
  assert len(executors) == len(spec.root.dag.tasks)
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
  schema_param = (spec["root"]["dag"]["tasks"]["SchemaImporter"]["inputs"]["parameters"]
                  ["schema_text"]["runtimeValue"]["constant"])
  assert schema_param == CATS_VS_DOGS_SCHEMA.read_text()


def test_compile_errors_are_one_line(tmp_path):
  data = make_dataset(tmp_path / "photos", {"all": 2}, splits=False)
  base = ["kubeflow", "compile", "--data-root", str(data), "--weights", "none"]
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


def _compile_to(tmp_path, pipeline_root: str):
  """`finetune kubeflow compile` of two tiny classes to `pipeline_root`: (package, output)."""
  data = make_dataset(tmp_path / "cats_vs_dogs", {"all": 2}, splits=False)
  package = tmp_path / "pipeline.yaml"
  result = CliRunner().invoke(main, ["kubeflow", "compile", "--image", IMAGE, "--data-root",
                                     str(data), "--weights", "none", "--output", str(package),
                                     "--pipeline-root", pipeline_root])
  assert result.exit_code == 0, result.output
  return package, result.output


def test_a_package_without_object_storage_has_no_platform_spec(tmp_path):
  package, _ = _compile_to(tmp_path, "gs://bucket/finetune")
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
  base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
  assert re.fullmatch(r"python:3\.11\.\d+-[a-z-]+", base)  # pinned, the venv's Python
  assert "COPY requirements.lock" in dockerfile
  assert "pip install --ignore-requires-python --no-deps -r requirements.lock" in dockerfile
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

    # A five-field cron is refused before anything is sent; six fields schedule.
    sent = len(stub.requests)
    result = CliRunner().invoke(main, ["kubeflow", "schedule", str(package), *host,
                                       "--cron", "0 3 * * *"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert '"0 0 3 * * *"' in result.output and len(stub.requests) == sent
    result = CliRunner().invoke(main, ["kubeflow", "schedule", str(package), *host,
                                       "--cron", "0 0 3 * * *", "--no-catchup"])
    assert result.exit_code == 0, result.output
    assert len(stub.recurring_runs) == 1
    result = CliRunner().invoke(main, ["kubeflow", "schedules", "--host", stub.url])
    assert "0 0 3 * * *  enabled  max concurrency 1" in result.output
    assert all("planted-token-4e1f" not in r.output for r in [result])
    assert any(r.headers.get("authorization") == "Bearer planted-token-4e1f"
               for r in stub.requests)

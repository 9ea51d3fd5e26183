"""A compiled Kubeflow task run inside the built task image (deploy/kubeflow/Dockerfile).

ImageExampleGen's exact command and arguments from the package's deploymentSpec,
with the ExecutorInput KFP's driver would build (tests/kfp_launcher.py), run as
user 1000 inside the image: `docker run` when a Docker engine has the image,
else `buildah run` (chroot isolation, which shares this machine's network).
The photos and the pipeline root are in a local S3 server on 127.0.0.1 (moto),
reached with the endpoint the package gives the task and the keys from the
secret it names.

The image is built by `make image` (IMAGE, default finetune:latest; this test
reads FINETUNE_IMAGE). Without it the test skips, saying so; with
FINETUNE_IMAGE_TESTS=1 (CI) a missing image fails instead.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import uuid

import boto3
import pytest

from conftest import (CATS_VS_DOGS_SCHEMA, compile_args, kubeflow_s3_settings, local_s3,
                      make_dataset, tiny_overrides)
import kfp_launcher

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

IMAGE = os.environ.get("FINETUNE_IMAGE", "finetune:latest")
REQUIRED = os.environ.get("FINETUNE_IMAGE_TESTS") == "1"
# The storage build-image.sh builds into.
BUILDAH = ["buildah", "--storage-driver", "vfs"]
TASK = "ImageExampleGen"
UID = "1000"
PER_SPLIT = {"train": 6, "validation": 2, "test": 2}
REGION = "us-east-1"
SECRET_NAME = "finetune-s3"
SECRETS = {SECRET_NAME: {"AWS_ACCESS_KEY_ID": "image-test-key-id",
                         "AWS_SECRET_ACCESS_KEY": "image-test-secret"}}
TASK_TIMEOUT_S = 900


def _answers(argv: list[str]) -> bool:
  try:
    return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


def _engine() -> str:
  """The engine that holds the image (docker or buildah); skips, or fails in CI, if none does."""
  if shutil.which("docker") and _answers(["docker", "image", "inspect", IMAGE]):
    return "docker"
  if shutil.which("buildah") and _answers([*BUILDAH, "inspect", "--type", "image", IMAGE]):
    return "buildah"
  reason = f"the task image {IMAGE} is not built here (make image)"
  if REQUIRED:
    pytest.fail(f"{reason}, and FINETUNE_IMAGE_TESTS=1 requires it")
  pytest.skip(f"{reason}; FINETUNE_IMAGE_TESTS=1 makes this a failure")


class Store:
  def __init__(self, endpoint: str):
    self.endpoint = endpoint
    self.client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                               **{k.lower(): v for k, v in SECRETS[SECRET_NAME].items()})

  def upload(self, folder: pathlib.Path, uri: str) -> None:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for path in sorted(folder.rglob("*")):
      if path.is_file():
        self.client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")

  def keys(self, uri: str) -> list[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"][len(prefix):].lstrip("/") for page in pages for o in page.get("Contents", [])]

  def read(self, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def store():
  with local_s3() as endpoint:
    yield Store(endpoint)


def _compile(store: Store, data_uri: str, package: pathlib.Path) -> None:
  """`finetune kubeflow compile` in its own process (it reads the data root in S3)."""
  settings = tiny_overrides(data_uri, "s3://mlpipeline/finetune", **{
      "data.schema_path": str(CATS_VS_DOGS_SCHEMA), "kubeflow.image": IMAGE,
      **kubeflow_s3_settings(store.endpoint, REGION, SECRET_NAME)})
  args = compile_args(settings, package)
  env = {**os.environ, **SECRETS[SECRET_NAME], "AWS_ENDPOINT_URL": store.endpoint,
         "AWS_REGION": REGION, "TF_USE_LEGACY_KERAS": "1"}
  result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                          text=True, env=env, cwd=kfp_launcher.REPO_ROOT, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr


class Image:
  """Runs commands in the image as user 1000, on this machine's network, with host
  folders mounted: `docker run` each, or `buildah run` in one working container
  (made once: with vfs storage, making one copies the whole image)."""

  def __init__(self, engine: str):
    self.engine, self.container = engine, None
    if engine == "buildah":
      self.container = f"finetune-image-test-{uuid.uuid4().hex[:8]}"
      subprocess.run([*BUILDAH, "from", "--pull-never", "--quiet", "--name", self.container,
                      IMAGE], check=True, capture_output=True, text=True, timeout=900)

  def command(self, argv: list[str], env: dict[str, str],
              volumes: dict[pathlib.Path, str]) -> list[str]:
    options = [*(a for name, value in env.items() for a in ("--env", f"{name}={value}")),
               *(a for host, path in volumes.items() for a in ("--volume", f"{host}:{path}")),
               "--user", f"{UID}:{UID}"]
    if self.engine == "docker":
      return ["docker", "run", "--rm", "--network", "host", *options, IMAGE, *argv]
    return [*BUILDAH, "run", "--isolation", "chroot", *options, self.container, "--", *argv]

  def run(self, argv: list[str], env: dict[str, str], volumes: dict[pathlib.Path, str],
          timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(self.command(argv, env, volumes), capture_output=True, text=True,
                          timeout=timeout_s)

  def close(self) -> None:
    if self.container:
      subprocess.run([*BUILDAH, "rm", self.container], capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def image():
  started = Image(_engine())
  yield started
  started.close()


@pytest.fixture(scope="module")
def task_run(image, store, tmp_path_factory):
  """(argv, executor input, result, pod folder) of ImageExampleGen run in the image."""
  root_dir = tmp_path_factory.mktemp("image")
  data = make_dataset(root_dir / "cats_vs_dogs", PER_SPLIT)
  (data / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  store.upload(data, "s3://photos/cats_vs_dogs")
  package = root_dir / "pipeline.yaml"
  _compile(store, "s3://photos/cats_vs_dogs", package)

  spec = kfp_launcher.load_package(str(package))
  platform_spec = kfp_launcher.load_platform_spec(str(package))
  task = kfp_launcher.find_task(spec, TASK)
  assert not task.get("dependentTasks"), f"{TASK} is expected to be a first task"
  component = spec["components"][task["componentRef"]["name"]]
  container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
  assert container["image"] == IMAGE

  # The run as `finetune kubeflow submit` creates it: the package's root in its runtime config.
  root = kfp_launcher.run_root(spec["defaultPipelineRoot"], spec["pipelineInfo"]["name"],
                               "image-run")
  # It runs in the sub-DAG that NewDataCheck opened: its condition's artifact is an input.
  change = {"name": "1", "uri": f"{root}/NewDataCheck/check/change",
            "metadata": {"new_data": 1.0, "run_key": "0" * 64}}
  invocation = kfp_launcher.executor_input(
      spec, TASK, root, {}, dag_inputs={"_NewDataCheck.change": {"artifacts": [change]}})
  # The pod's local artifact folders (/s3, /minio, /gcs: where the output file goes) are
  # emptyDir volumes KFP mounts writable for any user; here host folders play them, with
  # the folders the launcher creates before the command runs.
  pod = root_dir / "pod"
  local_paths = [invocation["outputs"]["outputFile"]] + [
      kfp_launcher.local_path_for_uri(a["artifacts"][0]["uri"]) or ""
      for a in invocation["outputs"]["artifacts"].values()]
  tops = sorted({p.split("/")[1] for p in local_paths if p.startswith("/")})
  for path in local_paths:
    if path.startswith("/"):
      (pod / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
  for folder in [pod, *pod.rglob("*")]:
    folder.chmod(0o777)
  volumes = {pod / top: f"/{top}" for top in tops}
  argv = [a.replace("{{$}}", json.dumps(invocation))
          for a in container.get("command", []) + container.get("args", [])]
  leftover = [a for a in argv if re.search(r"\{\{\$", a)]
  assert not leftover, f"placeholders a launcher would fill that this test does not: {leftover}"
  env = {**{e["name"]: e.get("value", "") for e in container.get("env", [])},
         **kfp_launcher.secret_env(platform_spec, component["executorLabel"], SECRETS, TASK)}
  # The user the task runs as, checked in the same way the task is started.
  whoami = image.run(["id", "-u"], {}, volumes, 300)
  assert whoami.returncode == 0 and whoami.stdout.strip() == UID, whoami.stdout + whoami.stderr
  # What ran, for the record (the secrets are the test's own).
  (root_dir / "task-command.json").write_text(json.dumps(image.command(argv, env, volumes)))
  result = image.run(argv, env, volumes, TASK_TIMEOUT_S)
  (root_dir / "task.log").write_text(result.stdout + result.stderr)
  return argv, invocation, result, pod


def test_image_example_gen_runs_in_the_image_as_user_1000(task_run, store):
  argv, invocation, result, pod = task_run
  tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
  # 134 would be tensorflow-io's S3 teardown abort, which the entrypoint must avoid.
  assert result.returncode == 0, f"{TASK} exited {result.returncode}:\n{tail}"

  output_file = pod / invocation["outputs"]["outputFile"].lstrip("/")
  assert output_file.is_file(), f"no ExecutorOutput at {output_file}:\n{tail}"
  reported = json.loads(output_file.read_text())
  provisioned = invocation["outputs"]["artifacts"]
  assert "examples" in provisioned, sorted(provisioned)
  examples = ((reported.get("artifacts", {}).get("examples", {}).get("artifacts") or [{}])[0]
              .get("uri") or provisioned["examples"]["artifacts"][0]["uri"])

  keys = store.keys(examples)
  for split in PER_SPLIT:
    assert any(k.startswith(f"Split-{split}/") and ".gz" in k for k in keys), (split, keys)
  report = json.loads(store.read(f"{examples}/ingestion/report.json"))
  assert report["num_examples"] == 2 * sum(PER_SPLIT.values())
  assert [r["path"] for r in report["rejected"]] == ["train/cats/broken.jpg"]

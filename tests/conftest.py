"""Shared fixtures: tiny generated photo folders and tiny-model settings."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import zlib
import pathlib

import numpy as np
from PIL import Image
import pytest

import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data" / "cats_vs_dogs"
SHARED_FLOWERS = SHARED / "data" / "flowers"
SHARED_WEIGHTS = SHARED / "weights"
CATS_VS_DOGS_SCHEMA = pathlib.Path(__file__).resolve().parents[1] / "schemas" / "cats-vs-dogs.pbtxt"
# CI sets FINETUNE_SHARED_TESTS=1: there the real-photo tests must run, not skip.
REQUIRE_SHARED = os.environ.get("FINETUNE_SHARED_TESTS") == "1"


# Fixtures that run a whole pipeline: a test that uses one is `slow`, as is
# one on the real photos; `make test-fast` (the edit-test loop) leaves them
# out, `make test` and CI run everything.
PIPELINE_FIXTURES = {"tiny_run", "copied_run", "first_run", "second_run", "compiled"}


# `make test` (pytest -n auto --dist loadfile) gives each worker whole files,
# started in this order, longest first (as measured on two cores): the long
# ones spread over the workers and the short ones fill in at the end. Files
# not named follow.
LONGEST_FIRST = (
    "test_kubeflow_launcher.py", "test_own_photos.py", "test_pipeline_e2e.py", "test_report.py",
    "test_console.py", "test_ingestion.py", "test_resume.py", "test_scheduled.py",
    "test_model.py", "test_bad_input_run.py", "test_canary.py", "test_tflite.py",
    "test_bad_input.py", "test_check.py", "test_push.py", "test_cli.py",
)


def pytest_xdist_make_scheduler(config, log):
  """--dist loadfile, longest files first, and a file goes to a worker only
  once that worker is idle: xdist's own prefetch queued a second file behind
  the launcher's long tests, where it waited minutes while other workers idled."""
  if config.getvalue("dist") != "loadfile":
    return None
  import collections
  from xdist.scheduler import LoadFileScheduling

  def rank(scope: str) -> int:
    name = scope.rsplit("/", 1)[-1]
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

  class LongestFirst(LoadFileScheduling):
    _ordered = False

    def _assign_work_unit(self, node):
      if not self._ordered:  # the first time: the queue is complete
        self.workqueue = collections.OrderedDict(
            sorted(self.workqueue.items(), key=lambda unit: rank(unit[0])))
        self._ordered = True
      super()._assign_work_unit(node)

    def _reschedule(self, node):
      if node.shutting_down:
        return
      if not self.workqueue:
        node.shutdown()
        return
      # A worker runs a test once it knows the next one: with one test left
      # it is idle, waiting for more.
      if self._pending_of(self.assigned_work[node]) > 1:
        return
      self._assign_work_unit(node)

  return LongestFirst(config, log)


def pytest_collection_modifyitems(items):
  for item in items:
    if PIPELINE_FIXTURES & set(item.fixturenames) or item.get_closest_marker("shared_data"):
      item.add_marker(pytest.mark.slow)


def requires_shared(data: pathlib.Path = SHARED_DATA):
  if data.is_dir() and SHARED_WEIGHTS.is_dir():
    return pytest.mark.shared_data
  if REQUIRE_SHARED:
    raise RuntimeError(f"FINETUNE_SHARED_TESTS=1 but {data} or {SHARED_WEIGHTS} is missing")
  return pytest.mark.skip(reason=f"real photos not found at {data}")


def image_bytes(color, size=(40, 32), fmt="JPEG", mode="RGB", seed=0) -> bytes:
  """A small noisy image dominated by `color`: easy for a tiny model to learn."""
  rng = np.random.default_rng(seed)
  pixels = np.clip(np.array(color, float) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
  image = Image.fromarray(pixels.astype("uint8")).convert(mode)
  out = io.BytesIO()
  image.save(out, fmt)
  return out.getvalue()


CLASS_COLORS = {"cats": (200, 60, 50), "dogs": (40, 80, 210), "birds": (60, 200, 60),
                "fish": (230, 200, 40)}


def make_dataset(root: pathlib.Path, per_class: dict[str, int], splits=True,
                 classes=("cats", "dogs"), variant: str = "") -> pathlib.Path:
  """root/[train|validation|test/]<class>/<n>.jpg with the given counts; another
  `variant` gives other photos (e.g. one per span), the same one the same bytes."""
  split_names = list(per_class) if splits else [""]
  for split in split_names:
    count = per_class[split] if splits else per_class["all"]
    for name in classes:
      folder = root / split / name if split else root / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        (folder / f"{name}.{i}.jpg").write_bytes(
            image_bytes(CLASS_COLORS[name],
                        seed=zlib.crc32(f"{variant}{split}/{name}/{i}".encode())))
  return root


@pytest.fixture
def tiny_data(tmp_path) -> pathlib.Path:
  return make_dataset(tmp_path / "photos", {"train": 12, "validation": 4, "test": 4})


def tiny_overrides(data_root, output_dir, **extra) -> dict:
  """Settings for a fast end-to-end run: tiny random-init base, small images."""
  values = {
      "data.root": str(data_root),
      "output_dir": str(output_dir),
      "beam_args": ["--direct_num_workers=1"],
      "train.base_model": "mobilenet_v2", "train.alpha": 0.35, "train.weights": "none",
      "train.image_size": 32, "train.batch_size": 8,
      "train.phase1_epochs": 2, "train.phase2_epochs": 1, "train.unfreeze": "10",
      "train.phase1_learning_rate": 0.01,
      # A gentle, constant phase 2: tiny random-init models stay predictable.
      "train.phase2_optimizer": "rmsprop", "train.phase2_learning_rate": 1e-5,
      "train.phase2_schedule": "constant",
      # Tiny colour-coded photos are easy: fine-tune anyway, to exercise phase 2.
      "train.phase2_max_accuracy": 1.0,
      # Tests of the wiring bless any model; tests of the gate set its rules.
      "evaluate.min_gain_over_chance": 0.0, "evaluate.min_class_recall": 0.0,
      # The generated cats and dogs match the curated schema of the real ones.
      "data.schema_path": str(CATS_VS_DOGS_SCHEMA),
  }
  values.update(extra)
  return values


# A learnable tiny setup: VGG16 has no BatchNorm, so even random-init
# features keep the colour signal at 32 px; phase 2 unfreezes block 5.
TINY_VGG = {"train.base_model": "vgg16", "train.unfreeze": "block5_conv1",
            "train.phase1_learning_rate": 0.001, "train.phase1_epochs": 3,
            "train.phase2_epochs": 1}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id):
  """One full pipeline run on tiny data, shared by the tests that need a model.

  Returns (config, run); the model is blessed (threshold 0) and pushed.
  Tests must not modify its output folder; rerun into a copy instead.
  Under pytest-xdist the workers share it: the first to need it runs it, the
  others wait for it and read the run back from its ML Metadata.
  """
  import fcntl
  from pipeline import runs
  from pipeline.config import load_config
  from pipeline.local_runner import run_pipeline
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if worker_id != "master" else base) / "tiny_run"
  root.mkdir(exist_ok=True)
  data, done = root / "photos", root / "done"
  config = load_config(None, tiny_overrides(data, root / "out", **TINY_VGG)).validate()
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if done.exists():
      return config, runs.load_run(runs.open_store(config.metadata_path))
    make_dataset(data, {"train": 12, "validation": 4, "test": 4})
    (data / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
    run = run_pipeline(config, echo=lambda line: None)
    done.touch()
    return config, run


@pytest.fixture(scope="session", autouse=True)
def warm_canary():
  """The serving check's fresh process (components/canary.py) for pipeline
  runs in this test process, forked from an interpreter that has already
  imported TensorFlow and tensorflow_serving (tests/warm_python.py, -I): the
  6 s of imports once per test process, not at every push. Yields the real
  fresh-process launcher; runs in other processes (Kubeflow tasks, the CLI as
  a command) and tests that use `fresh_canary` start the worker afresh."""
  from components import canary
  from warm_python import WarmPython
  fresh = canary.run_fresh_process
  server = WarmPython({"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8",
                       "HOME": os.environ.get("HOME", "/"), "TF_CPP_MIN_LOG_LEVEL": "2"},
                      isolated=True)

  def run_warm(command: list[str], cwd: str, env: dict[str, str]) -> tuple[int | None, str]:
    if not server.handles(command):
      return fresh(command, cwd, env)
    log = os.path.join(cwd, "worker.log")
    code = server.run(command, env, cwd, log, canary.TIMEOUT_S)
    with open(log) as f:
      return code, f.read()

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(canary, "run_fresh_process", run_warm)
    yield fresh
  server.close()


@pytest.fixture
def fresh_canary(warm_canary, monkeypatch):
  """This test's serving checks start a new interpreter, as a push does."""
  from components import canary
  monkeypatch.setattr(canary, "run_fresh_process", warm_canary)


@contextlib.contextmanager
def local_s3(buckets=("photos", "mlpipeline")):
  """A local S3 server (moto) on 127.0.0.1 with `buckets`; yields its endpoint URL."""
  import boto3
  from moto.server import ThreadedMotoServer
  logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
  server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
  server.start()
  host, port = server.get_host_and_port()
  endpoint = f"http://{host}:{port}"
  client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="seed", aws_secret_access_key="seed")
  for bucket in buckets:
    client.create_bucket(Bucket=bucket)
  try:
    yield endpoint
  finally:
    server.stop()


def kubeflow_s3_settings(endpoint: str, region: str, secret_name: str) -> dict:
  """The compile settings that give every task the local S3 server and the named secret."""
  return {"kubeflow.s3_endpoint": endpoint, "kubeflow.s3_region": region,
          "kubeflow.s3_secret": secret_name,
          "kubeflow.s3_secret_access_key_id": "AWS_ACCESS_KEY_ID",
          "kubeflow.s3_secret_secret_access_key": "AWS_SECRET_ACCESS_KEY"}


def compile_args(settings: dict, package) -> list[str]:
  """`finetune kubeflow compile` arguments that apply `settings` (dotted names)."""
  args = ["kubeflow", "compile", "--output", str(package)]
  for key, value in settings.items():
    args += [f"--beam-arg={v}" for v in value] if key == "beam_args" else ["--set", f"{key}={value}"]
  return args

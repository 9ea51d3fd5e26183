"""The console of a real `finetune` process: this project's lines on the terminal,
everything TensorFlow, absl, Beam and Python warnings write in the run's log file."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import CLASS_COLORS, TINY_VGG, image_bytes, make_dataset, tiny_overrides

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# TensorFlow's C++ logger ("2026-11-30 04:10:02.419015: I tensorflow/..."), absl
# ("I1130 04:10:02.419015 1234 file.py:12] ..."), Python warnings ("...: FutureWarning: ...").
FOREIGN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |^[IWEF]\d{4} \d\d:\d\d:\d\d"
                     r"|Warning: |^WARNING:|^INFO:")
# Every line a run prints: component progress, epochs, the summary, the report and log.
OURS = re.compile(r"^(\[\d\d:\d\d:\d\d\] \w+ |Pipeline |Ingestion: |Training phase \d|Run |Data: "
                  r"|Anomalies: |Training: "
                  r"|Exported: |Evaluation on |Pushed: |Not pushed: |Artifacts: |Writing the run "
                  r"|Report: |Log: |Memory: |  )")


def finetune(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                        text=True, cwd=REPO_ROOT, timeout=600,
                        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})


def _settings(data, output) -> list[str]:
  args = []
  for key, value in tiny_overrides(data, output, **TINY_VGG).items():
    args += [f"--beam-arg={v}" for v in value] if key == "beam_args" else ["--set", f"{key}={value}"]
  return args


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("console")
  data = make_dataset(root / "cats_vs_dogs", {"train": 12, "validation": 4, "test": 4})
  result = finetune("run", *_settings(data, root / "out"))
  assert result.returncode == 0, result.stdout + result.stderr
  return root, result


def test_a_run_prints_only_its_own_lines(quiet_run):
  _, result = quiet_run
  assert result.stderr == ""
  lines = result.stdout.splitlines()
  assert [line for line in lines if not OURS.match(line)] == []
  assert any(line.startswith("Training phase 2 epoch 1/1: loss ") for line in lines)
  assert any(line.endswith("BLESSED") for line in lines)
  assert any(re.fullmatch(r"Memory: peak \d+\.\d GB", line) for line in lines)


def test_the_log_file_holds_the_libraries_output(quiet_run):
  root, result = quiet_run
  log = pathlib.Path(result.stdout.splitlines()[-1].removeprefix("Log: "))
  assert log.parent == root / "out" / "cats-vs-dogs" / "logs"
  text = log.read_text()
  assert any(FOREIGN.search(line) for line in text.splitlines())
  assert "tensorflow/core" in text  # C++ logging, from before the settings were checked


def test_predict_is_quiet_unless_verbose(quiet_run):
  root, _ = quiet_run
  photo = root / "red.jpg"
  photo.write_bytes(image_bytes(CLASS_COLORS["cats"], seed=3))
  quiet = finetune("predict", "--outputs", str(root / "out"), str(photo))
  assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
  assert quiet.stdout.startswith(f"{photo}  ")
  verbose = finetune("predict", "--outputs", str(root / "out"), "--verbose", str(photo))
  assert verbose.returncode == 0
  assert any(FOREIGN.search(line) for line in verbose.stderr.splitlines()), verbose.stderr


def test_a_stopped_run_shows_why_on_the_terminal(tmp_path):
  data = tmp_path / "photos"
  (data / "cats").mkdir(parents=True)
  (data / "cats" / "a.jpg").write_bytes(image_bytes(CLASS_COLORS["cats"]))
  result = finetune("run", *_settings(data, tmp_path / "out"))
  assert result.returncode == 2
  assert result.stderr.startswith("Run stopped: "), result.stderr
  assert not any(FOREIGN.search(line) for line in result.stderr.splitlines())


def test_a_machine_short_of_memory_is_warned_with_the_setting_that_lowers_it(tmp_path):
  from pipeline.cli.run import memory_needed_gb, memory_warning
  from pipeline.config import load_config
  config = load_config(None, {"data.root": str(tmp_path), "train.weights": "none"}).validate()
  needed = memory_needed_gb(config)
  assert memory_warning(config, int(needed * 1e9) + 1) is None
  warning = memory_warning(config, int(1.5e9))
  assert warning == (f"Warning: 1.5 GB of memory is free and this run may take {needed:.1f} GB; "
                     "close other programs, or lower it with --set train.image_size=192")
  # The way out it names does lower what the run needs.
  smaller = load_config(None, {"data.root": str(tmp_path), "train.weights": "none",
                               "train.image_size": 192}).validate()
  assert memory_needed_gb(smaller) < needed

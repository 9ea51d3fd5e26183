"""A run killed mid-way leaves usable outputs: the next `finetune run` finishes it."""
import os
import signal
import subprocess
import sys

import pytest

from pipeline import runs
from pipeline.config import load_config
from conftest import TINY_VGG, make_dataset, tiny_overrides

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)


def _command(overrides: dict, *extra: str) -> list[str]:
  args = [sys.executable, "-m", "pipeline.cli", "run", *extra]
  args += [f"--set={key}={value}" for key, value in overrides.items() if key != "beam_args"]
  return args + [f"--beam-arg={arg}" for arg in overrides["beam_args"]]


def test_killed_run_resumes_reusing_what_finished(tmp_path):
  data = make_dataset(tmp_path / "photos", {"train": 12, "validation": 4, "test": 4})
  overrides = tiny_overrides(data, tmp_path / "out", **TINY_VGG)
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  first = subprocess.Popen(_command(overrides, "--no-report"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=env, start_new_session=True)
  seen = []
  for line in first.stdout:  # kill it hard once training has begun
    seen.append(line)
    if "Trainer started" in line:
      os.killpg(first.pid, signal.SIGKILL)
      break
  first.wait(timeout=60)
  assert first.returncode == -signal.SIGKILL, "".join(seen[-30:])

  second = subprocess.run(_command(overrides), capture_output=True, text=True, env=env,
                          timeout=900)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  for node in ("ImageExampleGen", "StatisticsGen", "Transform"):
    assert f"{node} cached (inputs unchanged)" in second.stdout
  assert "Trainer done" in second.stdout and "Pushed:" in second.stdout
  # Every finished run ends with its report.
  report = second.stdout.rsplit("Report: ", 1)[1].splitlines()[0].strip()
  assert report.endswith("index.html") and os.path.isfile(report)

  config = load_config(None, overrides).validate()
  store = runs.open_store(config.metadata_path)
  states = {}
  for execution in store.get_executions():
    states.setdefault(runs.node_name(store, execution), []).append(runs.state_name(execution))
  assert states["ImageExampleGen"] == ["ran", "cached"]
  # The killed Trainer never finished; the second run trained from scratch.
  assert states["Trainer"][-1] == "ran" and "ran" not in states["Trainer"][:-1]

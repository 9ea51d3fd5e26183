"""Scheduled retraining, run after run as a timer would: a first span trains and
pushes, nothing new is a no-op, a new span retrains on both against the served
model, a drifted span stops before training."""
from __future__ import annotations

import re

from click.testing import CliRunner
import pytest

from conftest import (CLASS_COLORS, TINY_VGG, image_bytes, make_dataset, tiny_overrides)
from components.image_example_gen.fingerprint import data_fingerprint
from components.new_data import RECORD_FILE
from pipeline import freshness
from pipeline.cli import main
from pipeline.config import load_config
from pipeline import runs

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

PER_SPLIT = {"train": 8, "validation": 3, "test": 3}


def _run(data, out):
  args = ["run", "--no-report"]
  for key, value in tiny_overrides(data, out, **TINY_VGG).items():
    args += [f"--beam-arg={v}" for v in value] if key == "beam_args" else ["--set", f"{key}={value}"]
  return CliRunner().invoke(main, args)


def _seen(config, **kwargs):
  return freshness.unchanged_since(config, freshness.photos(config), **kwargs)


def _record(config, run_id):
  freshness.record_success(config, freshness.photos(config), run_id, [])


def _executions(config) -> int:
  return len(runs.open_store(config.metadata_path).get_executions())


def test_spans_arrive_nothing_new_is_a_no_op_and_drift_stops_the_run(tmp_path):
  data, out = tmp_path / "cats_vs_dogs", tmp_path / "out"
  make_dataset(data / "span-1", PER_SPLIT, variant="1")
  config = load_config(None, tiny_overrides(data, out, **TINY_VGG)).validate()

  first = _run(data, out)
  assert first.exit_code == 0, first.output
  version = re.search(r"Pushed: \S+/(\d+)$", first.output, re.M).group(1)

  executions = _executions(config)
  again = _run(data, out)
  assert again.exit_code == 0, again.output
  assert again.output.splitlines() == [
      line for line in again.output.splitlines() if "Warning" not in line][:1]
  assert again.output.strip().splitlines()[-1].startswith(
      "No new data: span 1 already seen by run ")
  assert _executions(config) == executions  # nothing ran, nothing was recorded

  make_dataset(data / "span-2", PER_SPLIT, variant="2")  # the next drop
  second = _run(data, out)
  assert second.exit_code == 0, second.output
  assert re.search(r"^  train +38 .*\(span 1, 2\)$", second.output, re.M), second.output  # + span-1 test
  assert re.search(r"^  test +6 .*\(span 2\)$", second.output, re.M), second.output
  assert "Drift (span-2 vs span-1): within the schema's thresholds" in second.output
  assert f"compared with the served version {version} on the same test photos" in second.output

  # span-3: the same classes from another camera, photos four times the size.
  # Other photos in each split: the same photo in train and test would leave
  # test empty, a run too thin to judge that stops before drift is measured.
  for n, (split, count) in enumerate(PER_SPLIT.items()):
    for name in ("cats", "dogs"):
      folder = data / "span-3" / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        (folder / f"{i}.jpg").write_bytes(image_bytes(CLASS_COLORS[name], size=(160, 128),
                                                      seed=1000 + 100 * n + i))
  third = _run(data, out)
  assert third.exit_code == 2, third.output
  assert "Run stopped: The newest data drop, span-3, drifted from span-2:" in third.output
  assert re.search(r"\[drift\] feature 'height': .*Jensen-Shannon divergence between current "
                   r"and previous is [0-9.]+ .*above the threshold 0.3", third.output)
  assert not _seen(config)  # a stopped run is not "seen": it retries


def test_a_changed_photo_or_setting_is_new_work(tmp_path):
  data = make_dataset(tmp_path / "photos", {"all": 2}, splits=False)
  config = load_config(None, {"data.root": str(data), "output_dir": str(tmp_path / "out"),
                              "train.weights": "none"}).validate()
  (tmp_path / "out" / config.pipeline_name).mkdir(parents=True)
  assert _seen(config) is None  # never ran
  _record(config, "run-1")
  assert _seen(config)["run_id"] == "run-1"
  photo = data / "cats" / "cats.0.jpg"
  photo.write_bytes(photo.read_bytes() + b"\0")  # edited in place
  assert _seen(config) is None
  _record(config, "run-2")
  config.train.phase2_epochs += 1
  assert _seen(config) is None
  # A photo that arrives while a run is going is new to the next run.
  before = freshness.photos(config)
  (data / "cats" / "late.jpg").write_bytes(photo.read_bytes())
  freshness.record_success(config, before, "run-3", [])
  assert _seen(config) is None


def test_a_torn_state_file_is_no_previous_run_and_is_rewritten_whole(tmp_path, monkeypatch):
  data = make_dataset(tmp_path / "photos", {"all": 2}, splits=False)
  config = load_config(None, {"data.root": str(data), "output_dir": str(tmp_path / "out"),
                              "train.weights": "none"}).validate()
  state = tmp_path / "out" / config.pipeline_name / RECORD_FILE
  state.parent.mkdir(parents=True)
  _record(config, "run-1")
  whole = state.read_text()
  state.write_text(whole[: len(whole) // 2])  # a run killed while writing it, before the fix
  warnings = []
  assert _seen(config, warn=warnings.append) is None
  assert warnings == [f"Warning: {state} is unreadable (JSONDecodeError); treating it as no "
                      "previous run"]

  # A write that fails half way leaves the previous file as it was.
  _record(config, "run-2")
  import os
  real_fsync = os.fsync

  def disk_full(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", disk_full)
  with pytest.raises(OSError):
    _record(config, "run-3")
  monkeypatch.setattr(os, "fsync", real_fsync)
  assert _seen(config)["run_id"] == "run-2"
  assert [p.name for p in state.parent.iterdir()] == [state.name]  # no temporary left behind


def test_odd_files_in_the_photos_do_not_stop_the_no_op_check(tmp_path):
  import os
  data = make_dataset(tmp_path / "photos", {"all": 2}, splits=False)
  os.symlink(data / "cats" / "gone.jpg", data / "cats" / "dangling.jpg")
  os.symlink(data / "cats" / "loop.jpg", data / "cats" / "loop.jpg")
  fd = os.open(os.fsencode(data / "cats") + b"/caf\xe9.jpg", os.O_WRONLY | os.O_CREAT)
  os.close(fd)
  before = data_fingerprint(str(data))
  (data / "cats" / "gone.jpg").write_bytes(b"x")  # the link now leads somewhere: a change
  assert data_fingerprint(str(data)) != before

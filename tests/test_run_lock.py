"""One run at a time per output folder: pipeline/run_lock.py against real other processes."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from pipeline.run_lock import EX_TEMPFAIL, LOCK_FILE, RunLocked, run_lock
from pipeline.run_lock import holder as lock_holder

# Another `finetune run`, as the OS sees it: a process that takes the lock and sleeps.
HOLDER = """
import sys, time
from pipeline.run_lock import run_lock
with run_lock(sys.argv[1], 0):
  print("locked", flush=True)
  time.sleep(float(sys.argv[2]))
"""


def _holder(run_dir, seconds):
  process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "locked"
  return process


def test_a_second_run_fails_fast_naming_the_holder(tmp_path):
  holder = _holder(tmp_path, 30)
  try:
    start = time.monotonic()
    with pytest.raises(RunLocked) as raised:
      with run_lock(str(tmp_path), 0):
        pytest.fail("took a lock another process holds")
    assert time.monotonic() - start < 1
    message = str(raised.value)
    assert "\n" not in message
    assert f"pid {holder.pid} on " in message and "started 20" in message
    assert str(tmp_path) in message and "exiting with 75" in message
    assert raised.value.exit_code == EX_TEMPFAIL == 75
    # The file says who holds it, for humans too.
    info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert info["pid"] == holder.pid and info["host"]
  finally:
    holder.kill()
    holder.wait()


def test_a_short_wait_gives_up_after_it(tmp_path):
  holder = _holder(tmp_path, 30)
  try:
    start = time.monotonic()
    with pytest.raises(RunLocked, match=r"after waiting 1s"):
      with run_lock(str(tmp_path), 1):
        pass
    assert 0.9 < time.monotonic() - start < 3
  finally:
    holder.kill()
    holder.wait()


def test_waiting_takes_the_lock_once_the_holder_exits(tmp_path):
  holder = _holder(tmp_path, 1.5)
  start = time.monotonic()
  with run_lock(str(tmp_path), 30) as info:
    waited = time.monotonic() - start
    assert info["pid"] == os.getpid()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
  assert holder.wait(5) == 0
  assert 0.5 < waited < 10
  # Released: the file stays (see run_lock.py), its holder is gone.
  assert (tmp_path / LOCK_FILE).read_text() == ""


def test_a_killed_holder_leaves_the_file_but_not_the_lock(tmp_path):
  holder = _holder(tmp_path, 60)
  os.kill(holder.pid, signal.SIGKILL)
  assert holder.wait(5) == -signal.SIGKILL
  # Its details are still in the file: it never got to clean up.
  assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
  start = time.monotonic()
  with run_lock(str(tmp_path), 0) as info:
    assert info["pid"] == os.getpid()
  assert time.monotonic() - start < 1


def test_the_lock_is_per_run_dir_and_reusable(tmp_path):
  cats, dogs = tmp_path / "cats", tmp_path / "dogs"
  holder = _holder(cats, 30)
  try:
    with run_lock(str(dogs), 0) as info:  # another pipeline runs alongside
      assert info["pid"] == os.getpid() == lock_holder(str(dogs / LOCK_FILE))["pid"]
      assert lock_holder(str(cats / LOCK_FILE))["pid"] == holder.pid
    assert lock_holder(str(dogs / LOCK_FILE)) == {}  # released: no holder left behind
  finally:
    holder.kill()
    holder.wait()
  for _ in range(2):  # released on exit, taken again
    with run_lock(str(cats), 0):
      assert lock_holder(str(cats / LOCK_FILE))["pid"] == os.getpid()
    assert lock_holder(str(cats / LOCK_FILE)) == {}


def test_a_bucket_run_dir_is_locked_on_this_machine(tmp_path, monkeypatch):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its lock file goes
  with run_lock("gs://bucket/outputs/cats", 0):
    with pytest.raises(RunLocked, match="gs://bucket/outputs/cats"):
      with run_lock("gs://bucket/outputs/cats", 0):
        pass
    with run_lock("gs://bucket/outputs/dogs", 0):
      pass
  assert len(list((tmp_path / "finetune-locks").iterdir())) == 2

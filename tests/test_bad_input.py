"""Odd files, torn state, full disks and killed processes: each is one clear
line or a listed rejection, never a crash that every later run repeats."""
from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys

import click
from click.testing import CliRunner
import pytest

from conftest import CATS_VS_DOGS_SCHEMA, make_dataset
from test_images import bomb_png
from test_layout import _odd_files

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_folder_of_every_kind_of_bad_file_is_checked_and_each_one_rejected(tmp_path):
  """One file of each kind users sent: before, the first three stopped the run."""
  data = make_dataset(tmp_path / "cats_vs_dogs", {"train": 4, "validation": 2, "test": 2})
  cats = data / "train" / "cats"
  _odd_files(cats)  # dangling.jpg, loop.jpg, again (a link to its own folder), caf\xe9.jpg
  (cats / "bomb.png").write_bytes(bomb_png())
  photo = (cats / "cats.0.jpg").read_bytes()
  (cats / "cut.jpg").write_bytes(photo[:-200])  # a copy cut short (its header kept)
  (data / "train" / "dogs" / "notes.jpg").write_text("a text file, named like a photo")

  result = subprocess.run(
      [sys.executable, "-m", "pipeline.cli", "check", "--data-root", str(data),
       "--outputs", str(tmp_path / "out"), "--beam-arg=--direct_num_workers=1",
       "--set", f"data.schema_path={CATS_VS_DOGS_SCHEMA}"],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)

  assert result.returncode == 0, result.stdout + result.stderr
  rejected = {line.split(": ", 1)[0].removeprefix("  rejected "): line.split(": ", 1)[1]
              for line in result.stdout.splitlines() if line.startswith("  rejected ")}
  assert rejected == {
      "train/cats/bomb.png": "absurd dimensions: 400 megapixels, more than 179 "
                             "(a decompression bomb?)",
      "train/cats/dangling.jpg": f"broken symbolic link: it points to {cats}/gone.jpg, "
                                 "which does not exist",
      "train/cats/loop.jpg": "symbolic link loop: following it never reaches a file",
      "train/cats/again": "symbolic link loop: it points back to a folder it is in",
      "train/cats/caf\\xe9.jpg": "file name is not valid UTF-8 (caf\\xe9.jpg); rename it",
      "train/cats/cut.jpg": rejected.get("train/cats/cut.jpg", "missing"),
      "train/dogs/notes.jpg": "not an image (unrecognised file format)",
  }
  assert rejected["train/cats/cut.jpg"].startswith("corrupt or truncated image data")
  assert "Data: 16 examples, 7 files rejected, 0 ignored" in result.stdout
  assert result.stdout.splitlines()[-1] == "A run would go ahead with this data."
  assert not (tmp_path / "out").exists()


def _fails_with(error: Exception, tmp_path) -> CliRunner:
  """Runs a command that fails with `error` as `finetune run` would (its log
  in <run dir>/logs); returns the result."""
  from pipeline.cli.console import log_path_for, quiet

  @click.command()
  def command():
    with quiet() as console:
      console.set_log(log_path_for(str(tmp_path / "out" / "photos"), "run"))
      raise error

  return CliRunner().invoke(command)


def _disk_full_sqlite_error(tmp_path) -> sqlite3.OperationalError:
  """SQLite's own error on a full disk (a database capped at 2 pages says the same)."""
  connection = sqlite3.connect(tmp_path / "capped.sqlite")
  connection.execute("PRAGMA max_page_count = 2")
  connection.execute("CREATE TABLE t (x BLOB)")
  try:
    connection.execute("INSERT INTO t VALUES (zeroblob(100000))")
  except sqlite3.OperationalError as e:
    return e
  raise AssertionError("SQLite stored more than its cap")


def test_a_full_disk_is_one_line_saying_so_and_where(tmp_path):
  sqlite_error = _disk_full_sqlite_error(tmp_path)
  assert str(sqlite_error) == "database or disk is full"
  # As the metadata store reports it: the SQL statement first, the cause after.
  try:
    try:
      raise sqlite_error
    except sqlite3.OperationalError as e:
      raise RuntimeError("INSERT INTO `Execution` (`type_id`, `last_known_state`) "
                         "VALUES (3, 2)") from e
  except RuntimeError as wrapped:
    result = _fails_with(wrapped, tmp_path)
  assert result.exit_code == 1
  lines = result.output.strip().splitlines()
  assert len(lines) == 1 and "INSERT" not in result.output, result.output
  assert lines[0].startswith(f"Failed: the disk is full at {tmp_path / 'out' / 'photos'} (")
  assert lines[0].endswith("MB free now): free some space, then run the same command again "
                           "(finished steps are kept)")

  result = _fails_with(OSError(28, "No space left on device", "/data/out/model.h5"), tmp_path)
  assert result.output.strip().startswith("Failed: the disk is full at /data/out/model.h5")


def test_other_failures_still_name_the_error_and_the_log(tmp_path):
  result = _fails_with(ValueError("something else"), tmp_path)
  lines = result.output.strip().splitlines()
  assert lines[0] == "Failed: ValueError: something else"
  assert lines[1].startswith("The full traceback is in ")


def test_a_killed_trainers_image_cache_is_removed_by_the_next_one(tmp_path, monkeypatch):
  import tempfile
  from components.trainer import train
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()  # a process that is no more: as after kill -9
  left = tmp_path / f"finetune-images-{gone.pid}-abc123"
  (left / "train").mkdir(parents=True)
  (left / "train" / "cache.data-00000-of-00001").write_bytes(b"\0" * 1000)
  running = tmp_path / f"finetune-images-{os.getppid()}-def456"  # a live process's
  running.mkdir()
  other = tmp_path / "finetune-images-notapid"
  other.mkdir()

  created = pathlib.Path(train._scratch_dir())

  assert not left.exists()
  assert running.is_dir() and other.is_dir()
  assert created.parent == tmp_path and created.name.startswith(f"finetune-images-{os.getpid()}-")


def test_state_files_are_replaced_whole(tmp_path, monkeypatch):
  from components.files import atomic_write_text
  path = tmp_path / "run" / "schema.pbtxt"
  atomic_write_text(path, "first")
  assert path.read_text() == "first" and oct(path.stat().st_mode & 0o777) == "0o644"

  def killed(*args):
    raise KeyboardInterrupt  # or a kill between writing and renaming

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    atomic_write_text(path, "second, never complete")
  assert path.read_text() == "first"
  assert os.listdir(path.parent) == ["schema.pbtxt"]

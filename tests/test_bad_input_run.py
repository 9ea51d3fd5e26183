"""A whole `finetune run` on good photos plus one file of every bad kind users
sent: each bad file is rejected with its reason, none is lost, and the run
goes on to push a model (before, the first odd file stopped the run)."""
from __future__ import annotations

import ctypes
import glob
import io
import json
import os
import pathlib
import subprocess
import sys

from PIL import Image
import pytest

from conftest import CLASS_COLORS, TINY_VGG, image_bytes, make_dataset, tiny_overrides
from test_images import bomb_png
from test_layout import _odd_files

pytestmark = pytest.mark.slow  # a whole pipeline run (make test-fast leaves it out)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _as_a_user_would():
  """For a run as root: drops root's right to read any file, so that a file
  without read permission is unreadable to the run as it is to a user's."""
  if os.geteuid() != 0:
    return None

  def drop():
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
      if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot drop the capability to read any file")
  return drop


def _bad_corpus(data: pathlib.Path) -> dict[str, str]:
  """One file of each bad kind under `data`; {relative path: the start of its reason}."""
  cats, dogs = data / "train" / "cats", data / "train" / "dogs"
  _odd_files(cats)  # dangling.jpg, loop.jpg, again (a link to its own folder), caf\xe9.jpg
  (cats / "bomb.png").write_bytes(bomb_png())
  photo = (cats / "cats.0.jpg").read_bytes()
  (cats / "cut.jpg").write_bytes(photo[:-200])  # a copy cut short (its header kept)
  (cats / "empty.jpg").write_bytes(b"")
  (cats / "locked.jpg").write_bytes(image_bytes(CLASS_COLORS["cats"], seed=1234))
  (cats / "locked.jpg").chmod(0)
  (dogs / "notes.jpg").write_text("a text file, named like a photo")
  icon = io.BytesIO()
  Image.new("RGB", (32, 32), CLASS_COLORS["dogs"]).save(icon, "ICO")
  (dogs / "icon.ico").write_bytes(icon.getvalue())
  (dogs / "strip.png").write_bytes(image_bytes((0, 0, 0), size=(2100, 100), fmt="PNG"))
  (dogs / "x-copy.jpg").write_bytes((dogs / "dogs.0.jpg").read_bytes())  # the same bytes
  both = image_bytes((128, 128, 128), seed=7)  # one photo filed under both classes
  (cats / "grey.jpg").write_bytes(both)
  (dogs / "grey.jpg").write_bytes(both)
  return {
      "train/cats/dangling.jpg": f"broken symbolic link: it points to {cats}/gone.jpg, "
                                 "which does not exist",
      "train/cats/loop.jpg": "symbolic link loop: following it never reaches a file",
      "train/cats/again": "symbolic link loop: it points back to a folder it is in",
      "train/cats/caf\\xe9.jpg": "file name is not valid UTF-8 (caf\\xe9.jpg); rename it",
      "train/cats/bomb.png": "absurd dimensions: 400 megapixels, more than 179 "
                             "(a decompression bomb?)",
      "train/cats/cut.jpg": "corrupt or truncated image data",
      "train/cats/empty.jpg": "empty file (0 bytes)",
      "train/cats/locked.jpg": "unreadable: ",
      "train/dogs/notes.jpg": "not an image (unrecognised file format)",
      "train/dogs/icon.ico": "unsupported format ICO",
      "train/dogs/strip.png": "extreme aspect ratio 2100x100",
      "train/dogs/x-copy.jpg": "duplicate of train/dogs/dogs.0.jpg (same bytes)",
      "train/cats/grey.jpg": "conflicting labels: the same photo is filed under cats and dogs",
      "train/dogs/grey.jpg": "conflicting labels: the same photo is filed under cats and dogs",
  }


def _run_args(settings: dict) -> list[str]:
  args = ["run", "--data-root", settings.pop("data.root"), "--outputs",
          settings.pop("output_dir")]
  args += [f"--beam-arg={v}" for v in settings.pop("beam_args")]
  for key, value in settings.items():
    args += ["--set", f"{key}={value}"]
  return args


def test_a_run_over_every_kind_of_bad_file_rejects_each_and_pushes_a_model(tmp_path):
  good = {"train": 4, "validation": 2, "test": 2}
  data = make_dataset(tmp_path / "cats_vs_dogs", good)
  expected = _bad_corpus(data)
  (data / "train" / "cats" / "Thumbs.db").write_bytes(b"x")  # OS litter: ignored, not lost
  out = tmp_path / "out"

  result = subprocess.run(
      [sys.executable, "-m", "pipeline.cli",
       *_run_args(tiny_overrides(data, out, **{**TINY_VGG, "train.phase1_epochs": 1,
                                               "train.phase2_epochs": 0}))],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
      preexec_fn=_as_a_user_would())

  assert result.returncode == 0, result.stdout + result.stderr
  serving = out / "cats-vs-dogs" / "serving" / "cats-vs-dogs"
  versions = sorted(p.name for p in serving.iterdir())
  assert len(versions) == 1 and versions[0].isdigit(), versions
  assert (serving / versions[0] / "saved_model.pb").is_file()
  assert "BLESSED" in result.stdout

  reports = glob.glob(str(out / "cats-vs-dogs" / "pipeline_root" / "ImageExampleGen" /
                          "examples" / "*" / "ingestion" / "report.json"))
  assert len(reports) == 1, reports
  report = json.loads(pathlib.Path(reports[0]).read_text())
  reasons = {r["path"]: r["reason"] for r in report["rejected"]}
  assert set(reasons) == set(expected)
  assert {path: reason for path, reason in reasons.items()
          if not reason.startswith(expected[path])} == {}
  summary = result.stdout.splitlines()  # the summary lists each one with its reason
  assert [path for path, reason in reasons.items()
          if f"  rejected {path}: {reason}" not in summary] == []
  assert report["ignored"] == ["train/cats/Thumbs.db"]
  assert report["num_examples"] == 2 * sum(good.values())

  # Nothing silently dropped: every entry in every class folder is accounted for.
  on_disk = sum(len(os.listdir(folder)) for folder in data.glob("*/*"))
  assert report["num_examples"] + report["num_rejected"] + report["num_ignored"] == on_disk
  assert report["num_rejected"] == len(expected)

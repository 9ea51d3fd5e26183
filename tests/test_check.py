"""`finetune check`: the run's own first stages on a photo folder, nothing recorded."""
from __future__ import annotations

from click.testing import CliRunner
import pytest

from conftest import CATS_VS_DOGS_SCHEMA, CLASS_COLORS, image_bytes, make_dataset
from pipeline.cli import main

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)


def _check(data, output, *extra):
  return CliRunner().invoke(main, ["check", "--data-root", str(data), "--outputs", str(output),
                                   "--beam-arg=--direct_num_workers=1", *extra])


def test_check_lists_what_a_run_would_ingest_and_records_nothing(tmp_path):
  data = make_dataset(tmp_path / "cats_vs_dogs", {"train": 4, "validation": 2, "test": 2})
  (data / "train" / "cats" / "broken.jpg").write_bytes(b"not an image")
  (data / "test" / "dogs" / "copy.jpg").write_bytes((data / "train" / "dogs" / "dogs.0.jpg").read_bytes())
  (data / "README.md").write_text("Photos from the park")
  result = _check(data, tmp_path / "out", "--set", f"data.schema_path={CATS_VS_DOGS_SCHEMA}")
  assert result.exit_code == 0, result.output
  lines = result.output.splitlines()
  assert "Layout: 2 classes (cats, dogs); train/validation/test folders; no spans" in lines
  assert "Data: 16 examples, 2 files rejected, 1 ignored" in result.output
  assert "  train           8  cats 4, dogs 4" in lines
  assert "  rejected train/cats/broken.jpg: " in result.output
  assert ("  rejected test/dogs/copy.jpg: duplicate of train/dogs/dogs.0.jpg (same bytes)"
          in lines), result.output
  assert "  ignored README.md" in lines
  assert any(line.startswith("Same photo more than once: 1 files left out") for line in lines)
  assert any(line.startswith("  train      width 40-40 (median 40), height 32-32") for line in lines)
  assert f"Anomalies against {CATS_VS_DOGS_SCHEMA}: none" in lines
  assert lines[-1] == "A run would go ahead with this data."
  assert not (tmp_path / "out").exists()


def test_check_fails_as_the_run_would_on_anomalies(tmp_path):
  data = make_dataset(tmp_path / "pets", {"train": 2, "validation": 1, "test": 1},
                      classes=("birds", "cats", "dogs"))
  result = _check(data, tmp_path / "out", "--set", f"data.schema_path={CATS_VS_DOGS_SCHEMA}")
  assert result.exit_code == 2, result.output
  assert "Run stopped: Data validation found anomalies against the curated schema:" in result.output
  assert "feature 'label'" in result.output or "feature 'class_name'" in result.output
  assert not (tmp_path / "out").exists()


def test_check_stops_as_the_run_would_when_a_split_misses_a_class(tmp_path):
  """20 photos a class, hash-split 8:1:1, left no cat in validation: check said a run
  would go ahead, and the run trained without judging cats."""
  data = tmp_path / "pets"
  for name in ("cats", "dogs"):
    (data / name).mkdir(parents=True)
    for i in range(20):  # these names leave validation without a cat
      (data / name / f"DSC{i:04d}.JPG").write_bytes(
          image_bytes(CLASS_COLORS[name], seed=i if name == "cats" else 100 + i))
  result = _check(data, tmp_path / "out", "--set", f"data.schema_path={CATS_VS_DOGS_SCHEMA}")
  assert result.exit_code == 2, result.output
  assert "  validation      4  cats 0, dogs 4" in result.output.splitlines()  # the counts show why
  assert result.output.strip().splitlines()[-1] == (
      "Run stopped: The validation split got no photo of class cats (cats 20 photos in all, "
      "split by a hash of the file name): add photos, at least 50 per class, or split them "
      "yourself into train/validation/test folders")
  assert not (tmp_path / "out").exists()

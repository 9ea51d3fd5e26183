"""`finetune history` and `finetune rollback` (pipeline/history.py, pipeline/history_cli.py)."""
import json
import pathlib
import shutil

from click.testing import CliRunner
import pytest

from components.blessing import read_verdict
from components.serving import served_versions
from pipeline import runs
from pipeline.history import (RollbackError, plan_rollback, rollback, rolled_back_versions,
                              spans_text, table, version_status)
from pipeline.cli.history import history as history_command, rollback as rollback_command
from pipeline.run_lock import EX_TEMPFAIL, run_lock


def _fake_versions(model_dir: pathlib.Path, versions) -> pathlib.Path:
  for version in versions:
    (model_dir / str(version)).mkdir(parents=True)
    (model_dir / str(version) / "saved_model.pb").write_bytes(b"")
  return model_dir


def test_rollback_moves_the_newest_version_aside(tmp_path):
  model_dir = _fake_versions(tmp_path / "model", [100, 200, 300])
  (model_dir / "tmp-upload").mkdir()  # not a version: left alone
  assert rollback(str(model_dir)) == [(300, f"{model_dir}/rolled-back-300")]
  assert sorted(served_versions(str(model_dir))) == [100, 200]
  assert (model_dir / "rolled-back-300" / "saved_model.pb").exists()  # moved, not deleted
  assert rolled_back_versions(str(model_dir)) == {300: f"{model_dir}/rolled-back-300"}
  assert (model_dir / "tmp-upload").is_dir()


def test_rollback_to_a_version_moves_every_newer_one_oldest_first(tmp_path):
  model_dir = _fake_versions(tmp_path / "model", [100, 200, 300, 400])
  assert plan_rollback(str(model_dir), 200) == [300, 400]
  assert [v for v, _ in rollback(str(model_dir), 200)] == [300, 400]
  assert sorted(served_versions(str(model_dir))) == [100, 200]
  assert rollback(str(model_dir), 200) == []  # already the newest: nothing to do


def test_a_name_taken_by_an_earlier_rollback_gets_a_suffix(tmp_path):
  model_dir = _fake_versions(tmp_path / "model", [100, 200])
  rollback(str(model_dir))
  _fake_versions(model_dir, [200])  # the same version pushed again by hand
  assert rollback(str(model_dir)) == [(200, f"{model_dir}/rolled-back-200-2")]
  assert rolled_back_versions(str(model_dir)) == {200: f"{model_dir}/rolled-back-200"}


def test_rollback_refusals_name_the_folder(tmp_path):
  model_dir = _fake_versions(tmp_path / "model", [100])
  with pytest.raises(RollbackError, match=r"version 100 is the only version served under .*model"):
    rollback(str(model_dir))
  with pytest.raises(RollbackError,
                     match=r"unknown version 7 under .*model \(served versions: 100\)"):
    rollback(str(model_dir), 7)
  with pytest.raises(RollbackError, match="no model is served under"):
    rollback(str(tmp_path / "nothing"))
  _fake_versions(model_dir, [200])
  rollback(str(model_dir))
  with pytest.raises(RollbackError, match=r"it was rolled back: rename .*rolled-back-200 to 200"):
    rollback(str(model_dir), 200)
  assert sorted(served_versions(str(model_dir))) == [100]


def test_version_status_and_spans_text():
  served, rolled_back = {1: "a", 2: "b"}, {3: "c"}
  assert [version_status(v, served, rolled_back) for v in (2, 1, 3, 4)] == [
      "served", "superseded", "rolled back", "gone"]
  assert spans_text(None) == spans_text({}) == spans_text({"train": [], "test": []}) == "-"
  assert spans_text({"train": [1, 2], "validation": [1, 2], "test": [1, 2]}) == "1-2"
  assert spans_text({"train": [1, 2, 3, 5], "validation": [1, 2, 3, 5], "test": [5]}) == (
      "train+validation 1-3,5, test 5")


def test_table_shows_unknown_values_as_dashes():
  row = {"run_id": "2025-01-01T03:00:00", "spans": None, "num_examples": None, "accuracy": None,
         "baseline_accuracy": None, "baseline_version": None, "blessed": None,
         "pushed_version": None, "version_status": None, "outcome": "failed at Trainer"}
  header, line = table([row]).splitlines()
  assert header.split() == ["run", "spans", "examples", "accuracy", "baseline", "blessed",
                            "pushed", "version", "outcome"]
  assert line.split() == ["2025-01-01T03:00:00"] + ["-"] * 7 + ["failed", "at", "Trainer"]


@pytest.fixture
def copied_run(tiny_run, tmp_path):
  """The tiny run's output folder, copied: (outputs, model dir, run, pushed version)."""
  config, run = tiny_run
  outputs = tmp_path / "out"
  shutil.copytree(config.output_dir, outputs)
  model_dir = outputs / config.pipeline_name / "serving" / config.model_name
  (version,) = served_versions(str(model_dir))
  return outputs, model_dir, run, version


def _invoke(command, outputs, *args):
  return CliRunner().invoke(command, ["--outputs", str(outputs), *args])


def _history(outputs) -> list[dict]:
  result = _invoke(history_command, outputs, "--json")
  assert result.exit_code == 0, result.output
  return json.loads(result.output)


def test_history_lists_the_run_as_metadata_recorded_it(copied_run):
  outputs, _, run, version = copied_run
  verdict = read_verdict(run.artifact("BlessingGate", "blessing").uri)
  (row,) = _history(outputs)
  assert row == {"run_id": run.run_id, "spans": None, "num_examples": 40,
                 "accuracy": verdict["accuracy"], "baseline_accuracy": None,
                 "baseline_version": None, "blessed": True, "pushed_version": version,
                 "version_status": "served", "outcome": "pushed"}
  assert runs.int_property(run.artifact("ImageExampleGen", "examples"), "num_examples") == 40

  result = _invoke(history_command, outputs)
  assert result.exit_code == 0, result.output
  header, line = result.output.strip().splitlines()
  assert header.split() == ["run", "spans", "examples", "accuracy", "baseline", "blessed",
                            "pushed", "version", "outcome"]
  assert line.split() == [run.run_id, "-", "40", f"{verdict['accuracy']:.4f}", "-", "yes",
                          str(version), "served", "pushed"]


def test_rollback_after_a_newer_push_serves_the_run_s_version_again(copied_run):
  outputs, model_dir, _, version = copied_run
  newer = version + 100  # as a later run's push would leave it
  shutil.copytree(model_dir / str(version), model_dir / str(newer))
  assert _history(outputs)[0]["version_status"] == "superseded"

  result = _invoke(rollback_command, outputs)
  assert result.exit_code == 0, result.output
  assert f"Rolled back version {newer}: moved to {model_dir}/rolled-back-{newer}" in result.output
  assert f"Served now: version {version}" in result.output
  assert sorted(served_versions(str(model_dir))) == [version]
  assert (model_dir / f"rolled-back-{newer}" / "saved_model.pb").exists()
  assert _history(outputs)[0]["version_status"] == "served"

  # The last version stays; unknown and rolled-back versions are refused, one line each.
  for args, message in (([], f"version {version} is the only version served"),
                        (["--to", "5"], "unknown version 5"),
                        (["--to", str(newer)], f"rename {model_dir}/rolled-back-{newer}")):
    result = _invoke(rollback_command, outputs, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
  assert sorted(served_versions(str(model_dir))) == [version]


def test_history_shows_a_rolled_back_version(copied_run):
  outputs, model_dir, _, version = copied_run
  shutil.copytree(model_dir / str(version), model_dir / str(version - 100))  # an older push
  result = _invoke(rollback_command, outputs, "--to", str(version - 100))
  assert result.exit_code == 0, result.output
  assert served_versions(str(model_dir)) == {version - 100: f"{model_dir}/{version - 100}"}
  (row,) = _history(outputs)
  assert row["pushed_version"] == version and row["version_status"] == "rolled back"
  assert "rolled back" in _invoke(history_command, outputs).output


def test_rollback_waits_for_no_run(copied_run):
  outputs, model_dir, _, version = copied_run
  shutil.copytree(model_dir / str(version), model_dir / str(version + 100))
  with run_lock(str(model_dir.parents[1]), 0):  # a run in progress (<output>/<pipeline>)
    result = _invoke(rollback_command, outputs)
  assert result.exit_code == EX_TEMPFAIL, result.output
  assert "another run holds the lock" in result.output
  assert sorted(served_versions(str(model_dir))) == [version, version + 100]


def test_history_without_runs_is_a_clear_error(tmp_path):
  result = CliRunner().invoke(history_command, ["--outputs", str(tmp_path / "none")])
  assert result.exit_code == 2 and "no pipeline runs under" in result.output

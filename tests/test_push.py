"""A push is judged against the model served now and lands whole or not at all."""
import errno
import json
import os
import shutil

import pytest
from tfx.utils import io_utils

from components import pusher
from components.blessing import read_verdict
from components.serving import served_versions
from pipeline.config import with_overrides
from pipeline.local_runner import run_pipeline

pytestmark = pytest.mark.slow  # whole pipeline runs (make test-fast leaves them out)


def _saved_model(folder):
  (folder / "variables").mkdir(parents=True)
  (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 1000)
  (folder / "saved_model.pb").write_bytes(b"graph")
  return folder


def test_a_rerun_judges_against_the_model_served_now_not_a_cached_verdict(tiny_run, tmp_path):
  config, first = tiny_run
  shutil.copytree(config.output_dir, tmp_path / "out")
  rerun = with_overrides(config, {"output_dir": str(tmp_path / "out")})
  model_dir = tmp_path / "out" / config.pipeline_name / "serving" / config.model_name
  (version,) = served_versions(str(model_dir))
  # Since the verdict, another model was put in service (as after a rollback is undone).
  shutil.copytree(model_dir / str(version), model_dir / str(version + 5))

  lines = []
  run = run_pipeline(rerun, echo=lines.append)
  assert any("Trainer cached" in line for line in lines), lines  # nothing new to train
  assert any("BlessingGate done" in line for line in lines), lines  # judged again
  assert not any("BlessingGate cached" in line or "Pusher cached" in line for line in lines)
  verdict = read_verdict(run.artifact("BlessingGate", "blessing").uri)
  assert verdict["served_version"] == version + 5
  assert read_verdict(first.artifact("BlessingGate", "blessing").uri)["served_version"] is None

  # The same model scores the same: blessed, pushed, with its card beside the model.
  (pushed,) = set(served_versions(str(model_dir))) - {version, version + 5}
  extra = model_dir / str(pushed) / "assets.extra"
  card = json.loads((extra / "model_card.json").read_text())
  assert card["classes"] == ["cats", "dogs"] and card["version"] == pushed
  assert card["photos"]["train"] == {"cats": 12, "dogs": 12}  # the broken file is not counted
  assert card["baseline"] == {"version": version + 5, "accuracy": verdict["accuracy"]}
  assert card["confusion_matrix"] == verdict["confusion_matrix"]
  assert "The smallest class, cats, had 12 training photos." in card["limitations"]
  assert (extra / "tf_serving_warmup_requests").stat().st_size > 0  # passed the serving check
  page = (extra / "model_card.html").read_text()
  assert f"version {pushed}" in page and f"replaced version {version + 5}" in page


def test_the_pusher_refuses_a_verdict_about_a_model_no_longer_served(tmp_path):
  base = tmp_path / "serving"
  _saved_model(base / "100")
  pusher.check_verdict_current({"served_version": 100}, str(base))
  _saved_model(base / "200")  # served since the gate judged
  with pytest.raises(pusher.StaleVerdictError, match="judged against version 100, but "
                     "version 200 is served now"):
    pusher.check_verdict_current({"served_version": 100}, str(base))
  with pytest.raises(pusher.StaleVerdictError, match="judged against no served model"):
    pusher.check_verdict_current({"served_version": None}, str(base))


def test_a_push_lands_whole_under_a_new_version(tmp_path):
  model = _saved_model(tmp_path / "model")
  base = tmp_path / "serving"
  _saved_model(base / "4102444800")  # a version from the future: the next is above it
  version = pusher.new_version(str(base))
  assert version == 4102444801
  target = pusher.push(str(model), str(base), version)
  assert sorted(os.listdir(base)) == ["4102444800", "4102444801"]
  assert os.path.isfile(os.path.join(target, "saved_model.pb"))
  assert served_versions(str(base))[version] == target


def test_a_push_that_fails_midway_leaves_no_version_behind(tmp_path, monkeypatch):
  model = _saved_model(tmp_path / "model")
  base = tmp_path / "serving"

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(io_utils, "copy_file", disk_full)  # the variables are copied already
  with pytest.raises(OSError, match="No space left"):
    pusher.push(str(model), str(base), 123)
  assert os.listdir(base) == []  # neither a half version nor its temporary folder


def test_a_staged_copy_that_fails_its_checks_never_becomes_a_version(tmp_path):
  model = _saved_model(tmp_path / "model")
  base = tmp_path / "serving"

  def refuse(staging):
    assert os.path.isfile(os.path.join(staging, "saved_model.pb"))  # checked whole
    raise pusher.PushRefused("the model failed the serving check")

  with pytest.raises(pusher.PushRefused):
    pusher.push(str(model), str(base), 123, prepare=refuse)
  assert os.listdir(base) == [] and served_versions(str(base)) == {}

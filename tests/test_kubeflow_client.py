"""pipeline.kubeflow_client against an in-memory KFP v2beta1 server (tests/kfp_stub.py)."""
# No `from __future__ import annotations`: kfp.dsl reads the parameter types from the
# annotations, and as strings they would be taken for artifact types.
import hashlib
import logging
import socket
import time

import pytest
from kfp import compiler, dsl

from kfp_stub import API, DEFAULT_PIPELINE_ROOT, running
from pipeline.kubeflow_client import (Connection, KubeflowError, change_schedule, list_schedules,
                                      read_token, schedule, submit, validate_cron, wait)

TOKEN = "s3cret-token-value"


@dsl.container_component
def say(message: str):
  return dsl.ContainerSpec(image="alpine:3", command=["echo", message])


@dsl.pipeline(name="tiny-pipeline")
def tiny(message: str, epochs: int = 1):
  say(message=message)


@dsl.pipeline(name="tiny-pipeline", pipeline_root="s3://bucket/tiny/pipeline_root")
def rooted(message: str):
  say(message=message)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("kfp") / "tiny.yaml"
  compiler.Compiler().compile(tiny, str(path))
  return str(path)


@pytest.fixture(scope="module")
def rooted_package(tmp_path_factory) -> str:
  """A package with a defaultPipelineRoot, as `finetune kubeflow compile` writes one."""
  path = tmp_path_factory.mktemp("kfp") / "rooted.yaml"
  compiler.Compiler().compile(rooted, str(path))
  return str(path)


@pytest.fixture
def kfp_stub():
  with running() as stub:
    yield stub


@pytest.fixture
def conn(kfp_stub) -> Connection:
  return Connection(kfp_stub.url, token=TOKEN)


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _submit(conn, package, lines=None, **kwargs):
  kwargs.setdefault("echo", lines.append if lines is not None else lambda line: None)
  return submit(conn, package, "tiny-pipeline", "nightly", {"message": "hi"}, **kwargs)


# submit

def test_submit_uploads_the_package_and_runs_that_version(kfp_stub, conn, package, capsys):
  kfp_stub.experiments["experiment-other"] = {"experiment_id": "experiment-other",
                                              "display_name": "other"}
  kfp_stub.experiments["experiment-nightly"] = {"experiment_id": "experiment-nightly",
                                                "display_name": "nightly"}
  lines: list[str] = []
  result = submit(conn, package, "tiny-pipeline", "nightly", {"message": "hi", "epochs": "3"},
                  run_name="try 1", echo=lines.append)

  upload, = kfp_stub.find("POST", f"{API}/pipelines/upload")
  assert upload.file == open(package, "rb").read()
  assert upload.query["name"] == "tiny-pipeline"
  assert kfp_stub.packages[result["version_id"]] == upload.file
  run, = kfp_stub.find("POST", f"{API}/runs")
  assert run.body["experiment_id"] == "experiment-nightly"
  assert run.body["display_name"] == "try 1"
  # Typed as the package declares them: --param gives text, epochs is an int.
  assert run.body["runtime_config"]["parameters"] == {"message": "hi", "epochs": 3}
  assert run.body["pipeline_version_reference"] == {
      "pipeline_id": result["pipeline_id"], "pipeline_version_id": result["version_id"]}
  assert not kfp_stub.find("POST", f"{API}/experiments")  # found by name, not created
  assert result["run_id"] in kfp_stub.runs
  assert result["url"] == f"{kfp_stub.url}/#/runs/details/{result['run_id']}"

  assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in kfp_stub.requests)
  printed = capsys.readouterr()
  assert printed.out == "" and printed.err == ""  # kfp's own links and warnings are hidden
  assert lines and not any(TOKEN in line for line in lines)
  assert TOKEN not in repr(conn)


def test_later_submits_add_a_version_once_and_reuse_the_experiment(kfp_stub, conn, package):
  first = _submit(conn, package)
  second = _submit(conn, package)
  version, = kfp_stub.find("POST", f"{API}/pipelines/upload_version")
  assert version.query["pipelineid"] == first["pipeline_id"] == second["pipeline_id"]
  assert version.file == open(package, "rb").read()
  assert second["version_id"] != first["version_id"]
  # The same package again runs the version it already has, instead of a duplicate.
  third = _submit(conn, package)
  assert third["version_id"] == second["version_id"]
  assert len(kfp_stub.find("POST", f"{API}/pipelines/upload_version")) == 1
  created = kfp_stub.find("POST", f"{API}/experiments")
  assert [r.body["display_name"] for r in created] == ["nightly"]
  assert first["experiment_id"] == second["experiment_id"] == third["experiment_id"] == \
      list(kfp_stub.experiments)[0]


def test_progress_reaches_stdout_despite_kfp_being_hushed(kfp_stub, conn, package, capsys):
  _submit(conn, package, echo=print)
  _submit(conn, package, echo=print)
  assert capsys.readouterr().out.splitlines() == [
      "Uploaded new pipeline tiny-pipeline",
      f"Uploaded tiny-pipeline-{hashlib.sha256(open(package, 'rb').read()).hexdigest()[:12]} "
      "of pipeline tiny-pipeline"]


def test_submit_dry_run_sends_nothing(kfp_stub, conn, package):
  lines: list[str] = []
  result = _submit(conn, package, lines, dry_run=True)
  assert kfp_stub.requests == []
  assert result["dry_run"] is True
  text = "\n".join(lines)
  for expected in (f"POST {API}/pipelines/upload_version", f"POST {API}/runs",
                   '"nightly"', '"message": "hi"'):
    assert expected in text
  assert TOKEN not in text


# the pipeline root

def test_the_run_carries_the_packages_pipeline_root(kfp_stub, conn, rooted_package):
  # The backend never reads defaultPipelineRoot from the package: it must come with the run.
  result = _submit(conn, rooted_package)
  run, = kfp_stub.find("POST", f"{API}/runs")
  assert run.body["runtime_config"]["pipeline_root"] == "s3://bucket/tiny/pipeline_root"
  assert kfp_stub.pipeline_root(run.body) == "s3://bucket/tiny/pipeline_root"
  assert result["pipeline_root"] == "s3://bucket/tiny/pipeline_root"


def test_an_explicit_pipeline_root_wins_for_runs_and_schedules(kfp_stub, conn, rooted_package):
  kfp_stub.launcher_pipeline_root = "s3://configmap/root"
  _submit(conn, rooted_package, pipeline_root="s3://other/root")
  schedule(conn, rooted_package, "tiny-pipeline", "nightly", "0 0 3 * * *",
           params={"message": "hi"}, pipeline_root="gs://elsewhere/root", echo=lambda line: None)
  run, = kfp_stub.find("POST", f"{API}/runs")
  recurring, = kfp_stub.find("POST", f"{API}/recurringruns")
  assert kfp_stub.pipeline_root(run.body) == "s3://other/root"
  assert kfp_stub.pipeline_root(recurring.body) == "gs://elsewhere/root"


def test_a_schedule_carries_the_packages_pipeline_root(kfp_stub, conn, rooted_package):
  schedule(conn, rooted_package, "tiny-pipeline", "nightly", "0 0 3 * * *",
           params={"message": "hi"}, echo=lambda line: None)
  recurring, = kfp_stub.find("POST", f"{API}/recurringruns")
  assert recurring.body["runtime_config"]["pipeline_root"] == "s3://bucket/tiny/pipeline_root"


def test_without_any_root_the_backend_default_applies(kfp_stub, conn, package):
  # Nothing to send: the ConfigMap's root, else minio://, which TensorFlow cannot write.
  _submit(conn, package)
  run, = kfp_stub.find("POST", f"{API}/runs")
  assert "pipeline_root" not in (run.body["runtime_config"] or {})
  assert kfp_stub.pipeline_root(run.body) == DEFAULT_PIPELINE_ROOT
  kfp_stub.launcher_pipeline_root = "s3://configmap/root"
  assert kfp_stub.pipeline_root(run.body) == "s3://configmap/root"


def test_a_local_pipeline_root_is_refused_before_sending(kfp_stub, conn, rooted_package):
  with pytest.raises(KubeflowError, match="is not object storage"):
    _submit(conn, rooted_package, pipeline_root="/tmp/artifacts")
  assert kfp_stub.requests == []


def test_the_dry_run_shows_the_pipeline_root(kfp_stub, conn, rooted_package):
  lines: list[str] = []
  _submit(conn, rooted_package, lines, dry_run=True)
  run_line, = [line for line in lines if line.startswith(f"POST {API}/runs ")]
  assert '"pipeline_root": "s3://bucket/tiny/pipeline_root"' in run_line


@pytest.mark.parametrize("params, message", [
    ({"message": "hi", "epoch": "3"}, "no parameter epoch"),
    ({"message": "hi", "epochs": "three"}, "epochs is number_integer"),
    ({}, "needs parameter message"),
])
def test_bad_parameters_are_refused_before_sending(kfp_stub, conn, package, params, message):
  with pytest.raises(KubeflowError, match=message):
    submit(conn, package, "tiny-pipeline", "nightly", params, echo=lambda line: None)
  assert kfp_stub.requests == []


# wait

def test_wait_returns_when_the_run_succeeds(kfp_stub, conn, package):
  kfp_stub.run_outcome = ("SUCCEEDED", 2)
  run_id = _submit(conn, package)["run_id"]
  lines: list[str] = []
  assert wait(conn, run_id, timeout_s=30, echo=lines.append, poll_s=0.01) == "SUCCEEDED"
  assert lines == [f"Run {run_id}: RUNNING", f"Run {run_id}: SUCCEEDED"]  # changes only


def test_wait_raises_naming_a_failed_run(kfp_stub, conn, package):
  kfp_stub.run_outcome = ("FAILED", 1)
  run_id = _submit(conn, package)["run_id"]
  with pytest.raises(KubeflowError, match=rf"run {run_id} FAILED: task train exited"):
    wait(conn, run_id, timeout_s=30, echo=lambda line: None, poll_s=0.01)


def test_wait_gives_up_at_the_timeout(kfp_stub, conn, package):
  kfp_stub.run_outcome = ("SUCCEEDED", 100)  # ends in about 1 s: a missed timeout fails, not hangs
  run_id = _submit(conn, package)["run_id"]
  with pytest.raises(KubeflowError, match=rf"run {run_id} is still RUNNING after 0.2 s"):
    wait(conn, run_id, timeout_s=0.2, echo=lambda line: None, poll_s=0.01)


def test_wait_rides_out_a_gateway_blip_but_not_a_4xx(kfp_stub, conn, package):
  run_id = _submit(conn, package)["run_id"]
  kfp_stub.fail(f"{API}/runs/{run_id}", 503, "upstream connect error", times=1)
  assert wait(conn, run_id, timeout_s=30, echo=lambda line: None, poll_s=0.01) == "SUCCEEDED"
  kfp_stub.fail(f"{API}/runs/{run_id}", 403, "RBAC: access denied")
  polls = len(kfp_stub.find("GET", f"{API}/runs/{run_id}"))
  with pytest.raises(KubeflowError, match="HTTP 403"):
    wait(conn, run_id, timeout_s=30, echo=lambda line: None, poll_s=0.01)
  assert len(kfp_stub.find("GET", f"{API}/runs/{run_id}")) == polls + 1


# schedule

def test_schedule_creates_an_enabled_cron_recurring_run(kfp_stub, conn, package):
  result = schedule(conn, package, "tiny-pipeline", "nightly", "0 0 3 * * *", max_concurrency=2,
                    no_catchup=True, params={"message": "hi"}, echo=lambda line: None)
  body, = [r.body for r in kfp_stub.find("POST", f"{API}/recurringruns")]
  assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
  assert int(body["max_concurrency"]) == 2
  assert body["no_catchup"] is True
  assert body["mode"] == "ENABLE"
  assert body["runtime_config"]["parameters"] == {"message": "hi"}
  assert body["pipeline_version_reference"]["pipeline_version_id"] == result["version_id"]
  rid = result["recurring_run_id"]
  assert kfp_stub.recurring_runs[rid]["status"] == "ENABLED"
  assert result["url"] == f"{kfp_stub.url}/#/recurringrun/details/{rid}"


def test_five_field_cron_is_refused_before_any_request(kfp_stub, conn, package):
  with pytest.raises(KubeflowError) as error:
    schedule(conn, package, "tiny-pipeline", "nightly", "0 3 * * *",
             params={"message": "hi"}, echo=lambda line: None)
  assert str(error.value) == ('cron "0 3 * * *" has 5 fields; Kubeflow reads six, seconds '
                              'first: use "0 0 3 * * *"')
  assert kfp_stub.requests == []


@pytest.mark.parametrize("cron", ["0 0 0 3 * * *", "@daily", ""])
def test_cron_needs_six_fields(cron):
  with pytest.raises(KubeflowError, match="Kubeflow reads six"):
    validate_cron(cron)


def test_validate_cron_normalises_spacing():
  assert validate_cron("  0 0  3 * *   * ") == "0 0 3 * * *"


def test_recurring_runs_skip_missed_slots_unless_told(kfp_stub, conn, package):
  quiet = {"params": {"message": "hi"}, "echo": lambda line: None}
  schedule(conn, package, "tiny-pipeline", "nightly", "0 0 3 * * *", **quiet)
  schedule(conn, package, "tiny-pipeline", "nightly", "0 0 4 * * *", no_catchup=False, **quiet)
  first, second = [r.body for r in kfp_stub.find("POST", f"{API}/recurringruns")]
  assert first["no_catchup"] is True and second["no_catchup"] is False


def test_schedule_dry_run_echoes_the_plan_and_sends_nothing(kfp_stub, conn, package):
  lines: list[str] = []
  result = schedule(conn, package, "tiny-pipeline", "nightly", "0 30 2 * * 1-5",
                    max_concurrency=3, params={"message": "hi"}, dry_run=True,
                    echo=lines.append)
  assert kfp_stub.requests == []
  planned, = [r for r in result["requests"] if r["path"] == f"{API}/recurringruns"]
  assert planned["method"] == "POST"
  line, = [line for line in lines if line.startswith(f"POST {API}/recurringruns ")]
  for expected in ('"cron": "0 30 2 * * 1-5"', '"max_concurrency": 3', '"no_catchup": true',
                   '"mode": "ENABLE"'):
    assert expected in line
  assert not any(TOKEN in line for line in lines)


def test_max_concurrency_outside_the_server_range_is_refused(kfp_stub, conn, package):
  with pytest.raises(KubeflowError, match="max concurrency must be 1 to 10"):
    schedule(conn, package, "tiny-pipeline", "nightly", "0 0 3 * * *", max_concurrency=0,
             params={"message": "hi"}, echo=lambda line: None)
  assert kfp_stub.requests == []


# schedules: list, enable, disable, delete

def test_list_enable_disable_delete_schedules(kfp_stub, conn, package):
  quiet = {"params": {"message": "hi"}, "echo": lambda line: None}
  first = schedule(conn, package, "tiny-pipeline", "nightly", "0 0 3 * * *", **quiet)
  second = schedule(conn, package, "tiny-pipeline", "weekly", "0 0 4 * * 0",
                    max_concurrency=2, name="weekly tiny", **quiet)

  rows = list_schedules(conn)
  assert [(r["id"], r["cron"], r["enabled"], r["max_concurrency"]) for r in rows] == [
      (first["recurring_run_id"], "0 0 3 * * *", True, 1),
      (second["recurring_run_id"], "0 0 4 * * 0", True, 2)]
  weekly, = list_schedules(conn, experiment="weekly")
  assert weekly["name"] == "weekly tiny"
  assert kfp_stub.find("GET", f"{API}/recurringruns")[-1].query["experiment_id"] == \
      second["experiment_id"]

  rid = first["recurring_run_id"]
  change_schedule(conn, rid, "disable")
  assert kfp_stub.find("POST", f"{API}/recurringruns/{rid}:disable")
  assert kfp_stub.recurring_runs[rid]["mode"] == "DISABLE"
  assert [r["enabled"] for r in list_schedules(conn)] == [False, True]
  change_schedule(conn, rid, "enable")
  assert kfp_stub.find("POST", f"{API}/recurringruns/{rid}:enable")
  assert kfp_stub.recurring_runs[rid]["mode"] == "ENABLE"
  change_schedule(conn, rid, "delete")
  assert kfp_stub.find("DELETE", f"{API}/recurringruns/{rid}")
  assert rid not in kfp_stub.recurring_runs
  assert [r["id"] for r in list_schedules(conn)] == [second["recurring_run_id"]]


def test_schedule_errors_are_one_line(kfp_stub, conn):
  with pytest.raises(KubeflowError, match="refused to delete schedule nope: HTTP 404"):
    change_schedule(conn, "nope", "delete")
  with pytest.raises(KubeflowError, match="no experiment named missing"):
    list_schedules(conn, experiment="missing")
  with pytest.raises(KubeflowError, match="unknown schedule action"):
    change_schedule(conn, "x", "pause")
  assert list_schedules(conn) == []


# server and network errors

@pytest.mark.parametrize("path, method, status, reason", [
    (f"{API}/runs", "POST", 500, "Internal Server Error"),
    (f"{API}/pipelines/upload", "POST", 409, "Conflict"),
    (f"{API}/pipelines", "GET", 401, "Unauthorized"),
])
def test_http_errors_become_one_line(kfp_stub, conn, package, capsys, caplog, path, method,
                                     status, reason):
  kfp_stub.fail(path, status, "internal error:\n  something broke\n  at line 2", method=method)
  with caplog.at_level(logging.DEBUG), pytest.raises(KubeflowError) as error:
    _submit(conn, package)
  message = str(error.value)
  assert "\n" not in message
  assert f"HTTP {status} {reason}: internal error: something broke at line 2" in message
  assert message.startswith("Kubeflow Pipelines refused the ")
  assert TOKEN not in message
  printed = capsys.readouterr()
  assert "Traceback" not in printed.out + printed.err + caplog.text


def test_health_check_failure_is_fast_and_one_line(kfp_stub, conn, package, capsys, caplog):
  # kfp.Client would retry this 5 times, 5 s apart, logging a traceback each time.
  kfp_stub.fail(f"{API}/healthz", 503, "no healthy upstream")
  start = time.monotonic()
  with caplog.at_level(logging.DEBUG), pytest.raises(KubeflowError) as error:
    _submit(conn, package)
  assert time.monotonic() - start < 15
  assert str(error.value) == (f"Kubeflow Pipelines at {kfp_stub.url} failed its health check: "
                              "HTTP 503 Service Unavailable: no healthy upstream")
  assert kfp_stub.calls() == [f"GET {API}/healthz"]
  printed = capsys.readouterr()
  assert "Traceback" not in printed.out + printed.err + caplog.text


@pytest.mark.parametrize("call", [
    lambda conn, package: _submit(conn, package),
    lambda conn, package: wait(conn, "run-1", timeout_s=60, echo=lambda line: None),
    lambda conn, package: list_schedules(conn),
    lambda conn, package: change_schedule(conn, "recurring-1", "disable"),
])
def test_unreachable_host_fails_fast(package, call):
  conn = Connection(f"http://127.0.0.1:{_closed_port()}", token=TOKEN)
  start = time.monotonic()
  with pytest.raises(KubeflowError, match=rf"Kubeflow Pipelines at {conn.host} is not reachable"):
    call(conn, package)
  assert time.monotonic() - start < 15


def test_silent_host_fails_within_the_health_timeout(package):
  with socket.socket() as listener:  # accepts connections (backlog), never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    conn = Connection(f"http://127.0.0.1:{listener.getsockname()[1]}")
    start = time.monotonic()
    with pytest.raises(KubeflowError, match="is not reachable: timed out"):
      list_schedules(conn)
    assert time.monotonic() - start < 15


def test_host_without_scheme_is_refused(package):
  with pytest.raises(KubeflowError, match="needs http:// or https://"):
    list_schedules(Connection("ml-pipeline.kubeflow:8888"))


# tokens

def test_read_token(tmp_path, monkeypatch):
  token_file = tmp_path / "token"
  token_file.write_text("from-file\n")
  assert read_token("explicit", str(token_file)) == "explicit"
  assert read_token(None, str(token_file)) == "from-file"
  assert read_token(None, str(tmp_path / "missing")) is None
  monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))  # as kfp honours it
  assert read_token(None) == "from-file"
  monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))
  assert read_token(None) is None

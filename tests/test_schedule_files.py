"""deploy/schedule/: the systemd units and the crontab line parse and run `finetune run`."""
import configparser
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEDULE = ROOT / "deploy" / "schedule"
CHECKOUT = "%h/finetune-pipeline"  # where the units expect the project


def _unit(name: str) -> configparser.ConfigParser:
  """A unit file read strictly: no repeated sections or keys, `=` only, case kept."""
  parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",),
                                     comment_prefixes=("#", ";"), empty_lines_in_values=False)
  parser.optionxform = str  # systemd keys are case-sensitive
  parser.read_string((SCHEDULE / name).read_text(), source=name)
  return parser


def _command(parts: list[str]) -> list[str]:
  """The `finetune run ...` part of a command line, split as a shell would."""
  start = next(i for i, p in enumerate(parts) if p.endswith("/finetune") or p == "finetune")
  assert parts[start + 1] == "run", parts
  return parts[start:]


def _run_options() -> set[str]:
  from pipeline.cli import main
  return {o for p in main.commands["run"].params for o in p.opts}


def test_the_service_runs_finetune_once_and_tolerates_a_held_lock():
  unit = _unit("finetune-retrain.service")
  assert set(unit.sections()) == {"Unit", "Service"}  # started by the timer, not enabled itself
  assert unit["Unit"]["Description"]
  service = unit["Service"]
  assert service["Type"] == "oneshot"
  command = _command(shlex.split(service["ExecStart"]))
  assert command[0] == f"{CHECKOUT}/.venv/bin/finetune"  # systemd wants an absolute path
  assert command[command.index("--wait-for-lock") + 1] == "0"
  assert "75" in service["SuccessExitStatus"].split()


def test_the_timer_starts_the_service_daily_at_three():
  unit = _unit("finetune-retrain.timer")
  assert set(unit.sections()) == {"Unit", "Timer", "Install"}
  timer = unit["Timer"]
  assert timer["OnCalendar"] == "*-*-* 03:00:00"
  assert timer["Persistent"] == "true"
  assert timer["Unit"] == "finetune-retrain.service"
  assert unit["Install"]["WantedBy"] == "timers.target"


def _cron_lines() -> list[str]:
  lines = [line.strip() for line in (SCHEDULE / "crontab.txt").read_text().splitlines()]
  # Comments, blank lines and VAR=value settings are not jobs.
  return [line for line in lines
          if line and not line.startswith("#") and not re.match(r"^\w+\s*=", line)]


CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def test_the_crontab_line_runs_finetune_with_five_time_fields():
  (line,) = _cron_lines()
  fields = line.split(None, 5)
  assert len(fields) == 6, line
  assert all(CRON_FIELD.match(f) for f in fields[:5]), fields[:5]
  assert fields[:5] == ["0", "3", "*", "*", "*"]
  command = fields[5]
  assert "%" not in command  # cron turns % into a newline
  assert "finetune run" in command and "flock" not in command  # finetune locks itself
  run = _command(shlex.split(command.split("&&")[-1].split(">>")[0]))
  assert run[run.index("--wait-for-lock") + 1] == "0"
  assert re.search(r">>\s*\S+\.log 2>&1$", command), "output goes to a log file"


def test_the_schedules_pass_only_options_finetune_run_has():
  known = _run_options()
  if "--wait-for-lock" not in known:
    pytest.skip("pipeline/cli.py does not register `finetune run --wait-for-lock` yet")
  commands = [shlex.split(_unit("finetune-retrain.service")["Service"]["ExecStart"]),
              shlex.split(_cron_lines()[0].split(None, 5)[5].split("&&")[-1].split(">>")[0])]
  for command in commands:
    used = {p.split("=")[0] for p in _command(command) if p.startswith("--")}
    assert used <= known, used - known


@pytest.mark.skipif(not shutil.which("systemd-analyze"),
                    reason="systemd-analyze not installed: units checked by the parser only")
def test_systemd_analyze_accepts_the_units(tmp_path):
  # verify checks that ExecStart is executable: point the units at this checkout.
  for name in ("finetune-retrain.service", "finetune-retrain.timer"):
    text = (SCHEDULE / name).read_text().replace(CHECKOUT, str(ROOT))
    (tmp_path / name).write_text(text)
  if not (ROOT / ".venv" / "bin" / "finetune").exists():
    pytest.skip(f"{ROOT}/.venv/bin/finetune missing: systemd-analyze would reject ExecStart")
  result = subprocess.run(
      ["systemd-analyze", "verify", "--man=no", "./finetune-retrain.timer",
       "./finetune-retrain.service"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
  # Unknown keys or sections are only warnings: any line about our files fails too.
  assert result.returncode == 0 and "finetune-retrain" not in result.stderr, result.stderr
  calendar = subprocess.run(["systemd-analyze", "calendar", "*-*-* 03:00:00"],
                            capture_output=True, text=True, timeout=60)
  assert "Normalized form: *-*-* 03:00:00" in calendar.stdout, calendar.stdout

"""What `finetune run` does around the pipeline: the data check, the output
folder's lock, the no-op when nothing is new, the summary, report and log."""
from __future__ import annotations

import sys

from pipeline.cli.options import fail
from pipeline.config import PipelineConfig
from pipeline.cli.console import Console, log_path_for


# A whole run's peak resident memory at the defaults (256 px photos), with or
# without phase 2 (2,160 and 2,373 MiB in bench/results/memory-default.json
# and memory-phase2.json: 2.3 and 2.5 GB), rounded up. About 1.1 GB is the
# libraries; the rest grows with the photos' pixels.
PEAK_GB = 2.5
LIBRARIES_GB = 1.1


def memory_needed_gb(config: PipelineConfig) -> float:
  side = config.train.image_size or 256  # 0: the size ingestion picks, 256 at most
  return LIBRARIES_GB + (PEAK_GB - LIBRARIES_GB) * (side / 256) ** 2


def memory_warning(config: PipelineConfig, available_bytes: int) -> str | None:
  """One line when the machine has less free memory than these settings may take."""
  needed, free = memory_needed_gb(config), available_bytes / 1e9
  if free >= needed:
    return None
  return (f"Warning: {free:.1f} GB of memory is free and this run may take {needed:.1f} GB; "
          "close other programs, or lower it with --set train.image_size=192")


def peak_memory_line() -> str:
  """This process's peak resident memory, or a child's (the serving check) if higher."""
  import resource
  unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
  peak = max(resource.getrusage(who).ru_maxrss
             for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) * unit
  return f"Memory: peak {peak / 1e9:.1f} GB"


def interrupted(echo):
  echo("\nInterrupted. Finished steps are recorded in ML Metadata: run the same "
       "command again to resume from them.", err=True)
  sys.exit(130)


def run(config: PipelineConfig, no_report: bool, wait_for_lock: float, console: Console) -> None:
  from components.image_example_gen import DataLayoutError, detect_layout
  from pipeline.run_lock import RunLocked, run_lock
  try:
    # A data problem stops the run before anything is written, the lock file included.
    layout = detect_layout(config.data.root, config.data.spans)
  except DataLayoutError as e:
    console.echo(f"Run stopped: {e}", err=True)
    sys.exit(2)
  try:
    # Overlapping scheduled runs must not share the metadata store or the serving folder.
    with run_lock(config.run_dir, wait_for_lock):
      _run_locked(config, no_report, list(layout.spans), console)
  except RunLocked as e:
    fail(str(e), e.exit_code)


def _run_locked(config: PipelineConfig, no_report: bool, spans: list[int], console: Console):
  from components.data_gate import DataAnomaliesError
  from components.pusher import PushRefused
  from components.image_example_gen import DataLayoutError
  from components.image_example_gen.layout import ThinDataError
  from pipeline import freshness, runs
  from pipeline.cli.summary import summarize
  from pipeline.local_runner import run_pipeline
  from pipeline.cli.report import write_report
  from pipeline.run_result import read_result
  from pipeline.schema import SchemaError
  echo = console.echo
  photos = freshness.photos(config)
  seen = freshness.unchanged_since(config, photos, warn=lambda line: echo(line, err=True))
  if seen:  # a scheduled run with no new photos: one line, nothing touched
    echo(freshness.nothing_new_line(seen))
    return
  import psutil
  warning = memory_warning(config, psutil.virtual_memory().available)
  if warning:
    echo(warning, err=True)
  console.set_log(log_path_for(config.run_dir, "run"))
  try:
    result = run_pipeline(config, echo=echo)
  except (DataLayoutError, SchemaError) as e:
    if isinstance(e, ThinDataError):  # ingestion wrote its counts before stopping
      from pipeline.cli.check import stopped_ingestion_lines
      for line in stopped_ingestion_lines(e):
        echo(line)
    echo(f"Run stopped: {e}", err=True)
    sys.exit(2)
  except PushRefused as e:
    echo(f"Not pushed: {e}", err=True)
    sys.exit(1)
  except DataAnomaliesError as e:
    echo(f"Run stopped: {e}", err=True)
    if not no_report:  # the report shows the data summary and the anomalies
      path = write_report(config, read_result(
          runs.load_run(runs.open_store(config.metadata_path))))
      echo(f"Report: {path}", err=True)
    sys.exit(2)
  except KeyboardInterrupt:
    interrupted(echo)
  freshness.record_success(config, photos, result.run_id, spans)
  result = read_result(result)  # once, for the summary and the report
  echo("\n".join(summarize(config, result)))
  echo(peak_memory_line())
  if not no_report:
    echo("Writing the run report ...")
    echo(f"Report: {write_report(config, result)}")
  if console.log_path:
    echo(f"Log: {console.log_path}")

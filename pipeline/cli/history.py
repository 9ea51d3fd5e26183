"""`finetune history` and `finetune rollback`: what scheduled runs did, and undoing a push."""
from __future__ import annotations

import json
import os
import posixpath

import click

from pipeline.cli.options import fail, located_options


def _model_dir(config) -> str:
  return posixpath.join(config.serving_dir, config.model_name)


@click.command()
@located_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def history(config, as_json, echo):
  """List past runs: spans, examples, accuracy vs the served model, blessing, pushed version.

  The version column says whether the version a run pushed is served now,
  superseded by a newer one, rolled back (`finetune rollback`) or gone.
  """
  from pipeline.history import history as read_history, table
  if "://" not in config.metadata_path and not os.path.exists(config.metadata_path):
    fail(f"no pipeline metadata at {config.metadata_path}; run `finetune run` first, "
         "or pass --outputs/--pipeline-name")
  rows = read_history(config.metadata_path, _model_dir(config))
  if as_json:
    echo(json.dumps(rows, indent=1))
  elif not rows:
    echo(f"No runs recorded in {config.metadata_path} yet.")
  else:
    echo(table(rows))


@click.command()
@located_options
@click.option("--to", "to_version", type=int, metavar="VERSION",
              help="Take every version newer than VERSION out of service "
                   "(default: only the newest).")
def rollback(config, to_version, echo):
  """Take the newest served version out of service, so TF Serving serves the previous one.

  The version folder is renamed to rolled-back-<version> next to it, not
  deleted; it is no longer served nor the baseline of the next run's
  blessing. Refused while a run holds the lock (exit 75).
  """
  from components.serving import served_versions
  from pipeline.history import RollbackError, rollback as roll_back
  from pipeline.run_lock import RunLocked, run_lock
  model_dir = _model_dir(config)
  try:
    # A run in progress compares against, and pushes into, this folder.
    with run_lock(config.run_dir, 0):
      moved = roll_back(model_dir, to_version)
  except RunLocked as e:
    fail(str(e), e.exit_code)
  except RollbackError as e:
    fail(str(e))
  if not moved:
    echo(f"Nothing to roll back: version {to_version} is already the newest served "
         f"under {model_dir}")
    return
  for version, path in moved:
    echo(f"Rolled back version {version}: moved to {path}")
  served = served_versions(model_dir)  # never empty: the last version is never rolled back
  echo(f"Served now: version {max(served)} ({served[max(served)]}); TF Serving switches "
       "at its next poll of the folder")

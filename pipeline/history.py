"""Past runs as ML Metadata recorded them, and rolling back a served version.

A rollback moves a version folder aside (`<version>` -> `rolled-back-<version>`)
instead of deleting it: TF Serving and BlessingGate (components/serving.py)
only see numeric folders, so the previous version is served again and
becomes the baseline, and the model stays on disk to inspect or restore.
"""
from __future__ import annotations

import posixpath

import tensorflow as tf

from components.serving import served_versions
from pipeline import runs
from pipeline.run_result import RunResult, read_result

ROLLED_BACK = "rolled-back-"


class RollbackError(ValueError):
  """A rollback that must not happen; the message says why, naming the folder."""


def rolled_back_versions(model_dir: str) -> dict[int, str]:
  """Version -> folder of the versions moved aside by `rollback`."""
  if not tf.io.gfile.isdir(model_dir):
    return {}
  found = {}
  for name in sorted(tf.io.gfile.listdir(model_dir)):
    name = name.rstrip("/")
    version = name[len(ROLLED_BACK):].split("-")[0]
    if name.startswith(ROLLED_BACK) and version.isdigit():
      found.setdefault(int(version), posixpath.join(model_dir, name))
  return found


def version_status(version: int, served: dict[int, str], rolled_back: dict[int, str]) -> str:
  """served (TF Serving serves the highest version), superseded (a newer one is
  served; this one is the fallback), rolled back, or gone (deleted by hand)."""
  if version in served:
    return "served" if version == max(served) else "superseded"
  return "rolled back" if version in rolled_back else "gone"


def _ranges(numbers) -> str:
  """[1, 2, 3, 5] -> "1-3,5"."""
  numbers = sorted(set(numbers))
  parts, start = [], None
  for i, n in enumerate(numbers):
    start = n if start is None else start
    if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
      parts.append(str(n) if n == start else f"{start}-{n}")
      start = None
  return ",".join(parts)


def spans_text(spans) -> str:
  """The report's spans ({"train": [1, 2], "validation": [1, 2], "test": [2]}) in a
  few characters: "1-2" when every split holds the same, else "train+validation 1-2, test 2"."""
  if not spans or (isinstance(spans, dict) and not any(spans.values())):
    return "-"
  if not isinstance(spans, dict):
    return _ranges(spans)
  groups: dict[str, list[str]] = {}
  for split, numbers in spans.items():
    groups.setdefault(_ranges(numbers), []).append(split)
  if len(groups) == 1:
    return next(iter(groups))
  return ", ".join(f"{'+'.join(splits)} {text}" for text, splits in groups.items())


def _outcome(run: runs.PipelineRun, pushed: bool) -> str:
  states = {node.node_id: node.state for node in run.nodes.values()}
  failed = [node for node, state in states.items() if state in ("failed", "canceled")]
  if failed:
    return f"failed at {', '.join(failed)}"
  if any(state == "running" for state in states.values()):
    return "running or killed"
  if pushed:
    return "pushed"
  if "Pusher" in states:
    return "cached, nothing new" if states["Pusher"] == "cached" else "not blessed"
  return "partial"  # e.g. the statistics-only first pass that infers a schema


def run_row(result: RunResult, served: dict[int, str], rolled_back: dict[int, str]) -> dict:
  """One run's line of the history, as plain values (None: not known)."""
  verdict = result.verdict or {}
  pushed_version = result.pushed_version if result.pushed_now else None
  return {"run_id": result.run_id, "spans": (result.ingestion or {}).get("spans") or None,
          "num_examples": result.num_examples, "accuracy": verdict.get("accuracy"),
          "baseline_accuracy": verdict.get("baseline_accuracy"),
          "baseline_version": verdict.get("served_version"), "blessed": verdict.get("blessed"),
          "pushed_version": pushed_version,
          "version_status": version_status(pushed_version, served, rolled_back)
          if isinstance(pushed_version, int) else None,
          "outcome": _outcome(result.run, result.pushed_now)}


def history(metadata_path: str, model_dir: str) -> list[dict]:
  """Every recorded run, oldest first, with the state of the version it pushed
  in `model_dir` (<serving dir>/<model name>)."""
  store = runs.open_store(metadata_path)
  served, rolled_back = served_versions(model_dir), rolled_back_versions(model_dir)
  return [run_row(read_result(runs.load_run(store, run_id)), served, rolled_back)
          for run_id in runs.run_ids(store)]


COLUMNS = ("run", "spans", "examples", "accuracy", "baseline", "blessed", "pushed", "version",
           "outcome")


def _number(value, digits=4) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
  """The history as aligned text columns, one run a line."""
  lines = [COLUMNS]
  for row in rows:
    baseline = _number(row["baseline_accuracy"])
    if row["baseline_version"] is not None:
      baseline += f" (v{row['baseline_version']})"
    lines.append((
        row["run_id"], spans_text(row["spans"]),
        "-" if row["num_examples"] is None else str(row["num_examples"]),
        _number(row["accuracy"]), baseline,
        "-" if row["blessed"] is None else ("yes" if row["blessed"] else "no"),
        "-" if row["pushed_version"] is None else str(row["pushed_version"]),
        row["version_status"] or "-", row["outcome"]))
  widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
  return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                   for line in lines)


def _aside_path(model_dir: str, version: int) -> str:
  """rolled-back-<version>, or rolled-back-<version>-2 ... if that name is taken."""
  path = posixpath.join(model_dir, f"{ROLLED_BACK}{version}")
  n = 2
  while tf.io.gfile.exists(path):
    path = posixpath.join(model_dir, f"{ROLLED_BACK}{version}-{n}")
    n += 1
  return path


def plan_rollback(model_dir: str, to_version: int | None = None) -> list[int]:
  """The versions a rollback takes out of service, oldest first; raises RollbackError."""
  served = served_versions(model_dir)
  if not served:
    raise RollbackError(f"no model is served under {model_dir}: nothing to roll back")
  listing = ", ".join(map(str, sorted(served)))
  if to_version is None:
    if len(served) == 1:
      raise RollbackError(f"version {max(served)} is the only version served under {model_dir}; "
                          "rolling it back would leave nothing to serve")
    return [max(served)]
  if to_version not in served:
    aside = rolled_back_versions(model_dir).get(to_version)
    hint = (f"; it was rolled back: rename {aside} to {to_version} to serve it again" if aside
            else "")
    raise RollbackError(f"unknown version {to_version} under {model_dir} (served versions: "
                        f"{listing}){hint}")
  return sorted(v for v in served if v > to_version)


def rollback(model_dir: str, to_version: int | None = None) -> list[tuple[int, str]]:
  """Takes the newest served version (or every one newer than `to_version`) out
  of service by renaming its folder aside; returns [(version, new folder)].

  Oldest first, so TF Serving goes straight from the newest to the target,
  never serving one of the versions in between. tf.io.gfile: bucket URIs too.
  """
  served = served_versions(model_dir)
  moved = []
  for version in plan_rollback(model_dir, to_version):
    target = _aside_path(model_dir, version)
    try:
      tf.io.gfile.rename(served[version], target)
    except tf.errors.OpError as e:
      done = ", ".join(f"{v} -> {p}" for v, p in moved) or "none"
      raise RollbackError(f"cannot move {served[version]} to {target}: {e.message} "
                          f"(already moved: {done})") from None
    moved.append((version, target))
  return moved

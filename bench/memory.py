"""Memory: where a whole `finetune run` holds its peak resident memory.

Usage: python bench/memory.py [NAME] [DATA_ROOT] [WEIGHTS] [-- finetune run options ...]
  (defaults: default, ../shared/data/cats_vs_dogs, ../shared/weights)
Runs `finetune run --no-report` in a child process into a fresh output folder,
samples the resident memory of its whole process tree every 0.2 s, and labels
each sample by what the run's console said last: the component running
("[time] X started"), and inside the Trainer its steps (phase 1's base
features and head, phase 2, the export). Prints and writes
bench/results/memory-NAME.json: the peak RSS as /usr/bin/time reports it (the
largest process's maximum, from wait4), the sampled peak of the process tree,
each label's sampled peak, and the run's test accuracy.
Targets (issue 24): cats vs dogs at the defaults <= 2.5 GB; phase 2 forced
(-- --set train.phase2_max_accuracy=1.0) <= 3.0 GB.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time

from shown import shown  # noqa: E402  (bench/ is on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
INTERVAL = 0.2
# Console lines that start a new stretch of the run, in the order they come.
MARKS = [(re.compile(r"\[\d\d:\d\d:\d\d\] (\w+) started"), lambda m: m.group(1)),
         (re.compile(r"Phase 1: training the head"), lambda m: "Trainer: phase 1 base features"),
         (re.compile(r"base features of \d+"), lambda m: "Trainer: phase 1 head"),
         (re.compile(r"Training phase 1 epoch"), lambda m: "Trainer: phase 1 head"),
         (re.compile(r"Phase 2 skipped|Phase 2 did not improve"), lambda m: "Trainer: export"),
         # Before its epochs: the augmented views. frozen-block output, where phase 2 trains the top only.
         (re.compile(r"Phase 2: fine-tuning"), lambda m: "Trainer: phase 2 augmented views"),
         (re.compile(r"Training phase 2 epoch"), lambda m: "Trainer: phase 2 epochs"),
         (re.compile(r"\[\d\d:\d\d:\d\d\] Trainer done"), lambda m: "after Trainer")]


def _tree_rss_mb(pid: int) -> int:
  """Resident memory of `pid` and all its descendants, in MB."""
  children: dict[int, list[int]] = {}
  rss: dict[int, int] = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{entry}/status") as f:
        rss[int(entry)] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError, IndexError):
      continue
    children.setdefault(parent, []).append(int(entry))
  total, todo = 0, [pid]
  while todo:
    current = todo.pop()
    total += rss.get(current, 0)
    todo += children.get(current, [])
  return total // 1024


def measure(data_root: str, weights: str, extra: list[str]) -> dict:
  with tempfile.TemporaryDirectory(prefix="finetune-memory-") as output:
    began = time.time()
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--data-root", data_root,
         "--weights", weights, "--outputs", output, "--no-report", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1"})
    state = {"label": "start-up"}
    peaks: dict[str, int] = {}
    lines: list[str] = []
    done = threading.Event()

    logs: dict[pathlib.Path, int] = {}  # the run's log file: the Trainer's own lines

    def mark(line):
      for pattern, name in MARKS:
        match = pattern.search(line)
        if match:
          state["label"] = name(match)

    def tail_logs():
      for log in pathlib.Path(output).glob("*/logs/*.log"):
        with open(log, errors="replace") as f:
          f.seek(logs.get(log, 0))
          text = f.read()
          cut = text.rfind("\n") + 1
          logs[log] = logs.get(log, 0) + len(text[:cut].encode(errors="replace"))
          for line in text[:cut].splitlines():
            mark(line)

    def sample():
      while not done.wait(INTERVAL):
        tail_logs()
        rss = _tree_rss_mb(child.pid)
        label = state["label"]
        peaks[label] = max(peaks.get(label, 0), rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in child.stdout:
      lines.append(line)
      sys.stdout.write(line)
      sys.stdout.flush()
      mark(line)
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    sampler.join()
    wall = time.time() - began
    failed = os.waitstatus_to_exitcode(status) != 0
    if failed:  # the peaks so far still count: say so, and how it ended
      print(f"finetune run failed ({status}):\n{''.join(lines[-10:])}", file=sys.stderr)
    return {"seconds": round(wall, 1), "exit_code": os.waitstatus_to_exitcode(status),
            **({"last_line": lines[-1].strip()} if failed and lines else {}),
            "peak_rss_mb": usage.ru_maxrss // 1024,  # what /usr/bin/time -v reports
            "sampled_peak_tree_rss_mb": max(peaks.values()),
            "peak_rss_mb_by_step": peaks, **_figures(pathlib.Path(output))}


def _figures(output: pathlib.Path) -> dict:
  import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
  from components.evaluation import read_accuracy
  from components.trainer.train import SUMMARY_FILE
  from pipeline import runs

  (metadata,) = output.glob("*/metadata.sqlite")
  run = runs.load_run(runs.open_store(str(metadata)))
  summary = json.loads((pathlib.Path(run.artifact("Trainer", "model").uri) / SUMMARY_FILE)
                       .read_text())
  return {"test_accuracy": round(read_accuracy(run.artifact("Evaluator", "evaluation").uri), 4),
          "exported": {k: summary["exported"][k] for k in ("phase", "epoch", "val_accuracy")},
          "image_size": summary["config"]["image_size"],
          "component_seconds": {n: round(r.seconds, 1) for n, r in run.nodes.items()}}


def main():
  args = sys.argv[1:]
  extra = args[args.index("--") + 1:] if "--" in args else []
  args = args[:args.index("--")] if "--" in args else args
  name = args[0] if args else "default"
  data_root = args[1] if len(args) > 1 else str(SHARED / "data" / "cats_vs_dogs")
  weights = args[2] if len(args) > 2 else str(SHARED / "weights")
  result = {"data_root": shown(data_root), "options": extra, **measure(data_root, weights, extra)}
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
  (ROOT / "bench" / "results" / f"memory-{name}.json").write_text(json.dumps(result, indent=1)
                                                                   + "\n")


if __name__ == "__main__":
  main()

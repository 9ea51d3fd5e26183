"""Scale: memory and cost per photo at 20,000 photos against the 3,000 originals.

Usage: python bench/scale.py [PHOTOS] [DATA_ROOT] [WEIGHTS]
  (defaults: 20000, ../shared/data/cats_vs_dogs, ../shared/weights)
Generates PHOTOS photos from DATA_ROOT's (random crops, flips and colour
shifts, so no two are the same bytes or pixels; each stays in its original's
split, so no photo leaks across splits) into a reusable folder under the
system temp dir. Then runs `finetune run` with one epoch per phase, in its
own process, on the originals and on the generated set, both at the size the
originals train at by default (the crops are smaller, and would otherwise
train smaller: cost per photo compares like with like), and prints and writes
bench/results/scale.json: wall time, peak resident memory, ingestion time,
feature pass and phase-2 epoch time, and each per photo.
Targets: peak RSS <= 3.5 GB at 20,000 photos and a flat cost per photo.
"""
import datetime
import json
import multiprocessing
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import time

from PIL import Image, ImageOps
from shown import shown  # noqa: E402  (bench/ is on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# Phase 2 always runs here (however good phase 1 is): its epoch cost is measured.
ONE_EPOCH_EACH = ["--set", "train.phase1_epochs=1", "--set", "train.phase2_epochs=1",
                  "--set", "train.phase2_max_accuracy=1"]
TARGET_RSS_MB = 3338  # 3.5 GB (3.5e9 bytes) in MiB, the unit of ru_maxrss // 1024 here


def _variant(job: tuple[pathlib.Path, pathlib.Path, int]) -> None:
  """One new photo from `source`: a random crop (64-100% of each side), maybe mirrored,
  with each colour channel scaled by 0.85-1.15."""
  source, target, seed = job
  rng = random.Random(seed)
  with Image.open(source) as image:
    image = image.convert("RGB")
  width, height = image.size
  crop_w, crop_h = int(width * rng.uniform(0.64, 1.0)), int(height * rng.uniform(0.64, 1.0))
  left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
  image = image.crop((left, top, left + crop_w, top + crop_h))
  if rng.random() < 0.5:
    image = ImageOps.mirror(image)
  channels = [c.point(lambda v, f=rng.uniform(0.85, 1.15): min(255, int(v * f)))
              for c in image.split()]
  Image.merge("RGB", channels).save(target, "JPEG", quality=90)


def generate(data_root: pathlib.Path, count: int) -> pathlib.Path:
  """`count` photos made from `data_root`'s, same folders; reused when already made."""
  out = pathlib.Path(tempfile.gettempdir()) / f"finetune-scale-{data_root.name}-{count}"
  if (out / "DONE").exists():
    return out
  sources = sorted(p for p in data_root.rglob("*") if p.is_file())
  jobs = []
  for i in range(count):
    source = sources[i % len(sources)]
    folder = out / source.parent.relative_to(data_root)
    folder.mkdir(parents=True, exist_ok=True)
    jobs.append((source, folder / f"{i // len(sources)}-{source.stem}.jpg", i))
  began = time.time()
  with multiprocessing.Pool() as pool:
    pool.map(_variant, jobs, chunksize=64)
  (out / "DONE").write_text(f"{count} photos in {time.time() - began:.0f} s\n")
  return out


def _rss_mb(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))
  except (OSError, StopIteration):
    return 0


def _peak_by_component(samples: list[tuple[float, int]], console: str) -> dict[str, int]:
  """Peak RSS (MB) while each component ran, from the console's "[time] X started" lines."""
  spans, began = {}, {}
  for line in console.splitlines():
    match = re.match(r"\[(\d\d:\d\d:\d\d)\] (\w+) (started|done|cached)", line)
    if match:
      clock, node, event = match.groups()
      at = datetime.datetime.combine(datetime.date.today(),
                                     datetime.time.fromisoformat(clock)).timestamp()
      if event == "started":
        began[node] = at
      elif node in began:
        spans[node] = (began[node], at + 1)
  return {node: max((rss for t, rss in samples if start <= t <= end), default=0)
          for node, (start, end) in spans.items()}


def run(data_root: pathlib.Path, weights: str, *extra: str) -> dict:
  """`finetune run` in a child process: wall time, peak RSS (overall and per
  component, sampled every half second), and the run's own figures."""
  with tempfile.TemporaryDirectory() as output, tempfile.TemporaryFile("w+") as console:
    began = time.time()
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--data-root", str(data_root),
         "--weights", weights, "--outputs", output, "--no-report", *ONE_EPOCH_EACH, *extra],
        cwd=ROOT, stdout=console, stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    samples, pid = [], 0
    while not pid:
      samples.append((time.time(), _rss_mb(child.pid)))
      time.sleep(0.5)
      pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    wall = time.time() - began
    console.seek(0)
    text = console.read()
    if os.waitstatus_to_exitcode(status) != 0:
      raise SystemExit(f"finetune run on {data_root} failed ({status}):\n{text[-2000:]}")
    return {"seconds": round(wall, 1), "peak_rss_mb": usage.ru_maxrss // 1024,
            "peak_rss_mb_by_component": _peak_by_component(samples, text),
            **_figures(pathlib.Path(output))}


def _figures(output: pathlib.Path) -> dict:
  import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
  from components.data_facts import report_path
  from components.trainer.train import HISTORY_FILE, SUMMARY_FILE
  from pipeline import runs

  (metadata,) = output.glob("*/metadata.sqlite")
  run = runs.load_run(runs.open_store(str(metadata)))
  report = json.loads(pathlib.Path(report_path(run.artifact("ImageExampleGen", "examples").uri))
                      .read_text())
  model_dir = pathlib.Path(run.artifact("Trainer", "model").uri)
  history = json.loads((model_dir / HISTORY_FILE).read_text())
  summary = json.loads((model_dir / SUMMARY_FILE).read_text())
  phase2 = [r for r in history if r["phase"] == 2]
  return {
      "photos": report["num_examples"] + report["num_rejected"],
      "train_photos": sum(report["examples"]["train"].values()),
      "validation_photos": sum(report["examples"]["validation"].values()),
      "component_seconds": {n: round(r.seconds, 1) for n, r in run.nodes.items()},
      "feature_pass_seconds": summary["phases"]["1"].get("feature_seconds"),
      "phase2_epoch_seconds": phase2[0]["seconds"] if phase2 else None,
  }


def _curated_schema(data_root: pathlib.Path) -> str:
  import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
  from pipeline.config import load_config

  config = load_config(overrides={"data.root": str(data_root)}).validate()
  return config.curated_schema_path if pathlib.Path(config.curated_schema_path).is_file() else ""


def _default_size(data_root: pathlib.Path) -> int:
  import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
  from components.image_example_gen.images import typical_size
  return typical_size([str(p) for p in sorted(data_root.rglob("*")) if p.is_file()])


def per_photo(result: dict) -> dict:
  """Milliseconds per photo: of all photos, or of those the step reads
  (training and validation photos for the feature pass, training photos for an epoch)."""
  nodes = result["component_seconds"]
  return {
      "run_ms": round(1000 * result["seconds"] / result["photos"], 2),
      "ingestion_ms": round(1000 * nodes["ImageExampleGen"] / result["photos"], 2),
      "feature_pass_ms": round(1000 * result["feature_pass_seconds"]
                               / (result["train_photos"] + result["validation_photos"]), 2),
      "phase2_epoch_ms": round(1000 * result["phase2_epoch_seconds"] / result["train_photos"], 2),
      "evaluator_ms": round(1000 * nodes["Evaluator"] / result["photos"], 2),
  }


def main():
  count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
  data_root = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else
                           SHARED / "data" / "cats_vs_dogs")
  weights = sys.argv[3] if len(sys.argv) > 3 else str(SHARED / "weights")
  size = _default_size(data_root)
  originals = run(data_root, weights, "--set", f"train.image_size={size}")
  # The originals' curated schema, if any: the generated photos are the same
  # data grown, and without a schema the run would ingest twice (to infer one).
  schema = _curated_schema(data_root)
  scaled = run(generate(data_root, count), weights, "--set", f"train.image_size={size}",
               *(["--set", f"data.schema_path={schema}"] if schema else []))
  result = {
      "data_root": shown(data_root), "settings": "defaults, one epoch per phase",
      "image_size": size,
      "originals": {**originals, "per_photo": per_photo(originals)},
      "scaled": {**scaled, "per_photo": per_photo(scaled)},
      "target": {"peak_rss_mb": TARGET_RSS_MB, "cost_per_photo": "flat"},
  }
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results" / "scale.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()

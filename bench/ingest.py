"""Ingestion throughput: photos per second into TFRecords (ImageExampleGen executor).

Usage: python bench/ingest.py [DATA_ROOT]   (default ../shared/data/cats_vs_dogs)
Runs the executor as `finetune run` does (DirectRunner in process, a reading
thread per core) on the
photos, and on the photos four times over (links), so that the fixed cost of
starting Beam separates from the rate per photo. Each is timed REPEATS times
and the median kept: on a small shared machine single runs vary by 30%.
Prints the figures and writes bench/results/ingest.json. Target: >= 1,000 photos/s
once Beam runs (the marginal rate), on 2 cores.
"""
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import components  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.local_runner import _skip_tfx_sdist_on_direct_runner  # noqa: E402
from test_ingestion import ingest  # noqa: E402  (runs the executor as the orchestrator does)
from shown import shown  # noqa: E402  (bench/ is on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEAM_ARGS = tuple(PipelineConfig().beam_pipeline_args)  # as `finetune run` by default
REPEATS = 3


def _replicate(data_root: pathlib.Path, copies: int, out: pathlib.Path) -> pathlib.Path:
  """The same layout with every photo linked `copies` times."""
  for path in data_root.rglob("*"):
    if path.is_file():
      folder = out / path.parent.relative_to(data_root)
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(copies):
        os.symlink(path, folder / f"{i}-{path.name}")
  return out


def _timed_ingest(data_root: pathlib.Path, work: pathlib.Path) -> tuple[int, float, list]:
  """(files ingested, median seconds, every run's seconds)."""
  runs = []
  for attempt in range(REPEATS):
    start = time.time()
    report, _, _ = ingest(data_root, work / f"examples-{attempt}", beam_args=BEAM_ARGS,
                          read_back=False)
    runs.append(round(time.time() - start, 2))
  return report["num_examples"] + report["num_rejected"], statistics.median(runs), runs


def main():
  data_root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                           ROOT.parent / "shared" / "data" / "cats_vs_dogs")
  _skip_tfx_sdist_on_direct_runner()  # as `finetune run` does on the DirectRunner
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    images, seconds, runs = _timed_ingest(data_root, tmp / "once")
    big_images, big_seconds, big_runs = _timed_ingest(_replicate(data_root, 4, tmp / "x4"),
                                                      tmp / "four")
  result = {
      "data_root": shown(data_root), "beam_args": BEAM_ARGS,
      "images": images, "seconds": round(seconds, 2), "seconds_each_run": runs,
      "images_per_second": round(images / seconds, 1),
      "images_x4": big_images, "seconds_x4": round(big_seconds, 2), "seconds_x4_each_run": big_runs,
      "images_per_second_x4": round(big_images / big_seconds, 1),
      # Photos per second once Beam is up: the rate for large data sets.
      "marginal_images_per_second": round((big_images - images) / (big_seconds - seconds), 1),
      "target_images_per_second": 1000,
      "cores": os.cpu_count(),
  }
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
  (ROOT / "bench" / "results" / "ingest.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()

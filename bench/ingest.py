"""Ingestion throughput: photos per second into TFRecords (ImageExampleGen executor).

Usage: python bench/ingest.py [DATA_ROOT]   (default ../shared/data/cats_vs_dogs)
Prints the figures and writes bench/results/ingest.json. Target: >= 400 images/s.
"""
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import components  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)
from test_ingestion import ingest  # noqa: E402  (runs the executor as the orchestrator does)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
  data_root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                           ROOT.parent / "shared" / "data" / "cats_vs_dogs")
  with tempfile.TemporaryDirectory() as out:
    start = time.time()
    report, records, _ = ingest(data_root, pathlib.Path(out) / "examples",
                                beam_args=("--direct_running_mode=multi_processing",
                                           "--direct_num_workers=0"))
    seconds = time.time() - start
  images = report["num_examples"] + report["num_rejected"]
  result = {"data_root": str(data_root), "images": images, "seconds": round(seconds, 2),
            "images_per_second": round(images / seconds, 1), "target_images_per_second": 400,
            "examples_per_split": {s: len(r) for s, r in records.items()}}
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
  (ROOT / "bench" / "results" / "ingest.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()

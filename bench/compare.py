"""Side by side: the pipeline against the plain Keras script a user would write.

Usage: python bench/compare.py [DATA_ROOT] [WEIGHTS_DIR]
  (defaults: ../shared/data/cats_vs_dogs and ../shared/weights)
Runs bench/plain_keras.py (TensorFlow's transfer-learning tutorial, 5 + 5
epochs, 224 px) and then `finetune run` from an empty output folder, one
after the other, each in its own process. Prints and writes
bench/results/compare.json: wall time, test accuracy and peak resident memory
of each, and the ratio of the times (pipeline / plain). Target: ratio <= 0.5
at equal or better test accuracy.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from shown import shown  # noqa: E402  (bench/ is on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MOBILENET_V2 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def measure(command: list[str]) -> tuple[float, int, str]:
  """(wall seconds, peak RSS in MB, stdout) of a child process."""
  began = time.time()
  with tempfile.TemporaryFile("w+") as out:
    child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT,
                             env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    _, status, usage = os.wait4(child.pid, 0)
    out.seek(0)
    text = out.read()
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f"{' '.join(command)} failed:\n{text[-2000:]}")
  return time.time() - began, usage.ru_maxrss // 1024, text


def main():
  data_root = sys.argv[1] if len(sys.argv) > 1 else str(SHARED / "data" / "cats_vs_dogs")
  weights = sys.argv[2] if len(sys.argv) > 2 else str(SHARED / "weights")
  plain_seconds, plain_rss, text = measure(
      [sys.executable, "bench/plain_keras.py", data_root, os.path.join(weights, MOBILENET_V2)])
  plain = json.loads(text.strip().splitlines()[-1])
  with tempfile.TemporaryDirectory() as output:
    pipeline_seconds, pipeline_rss, text = measure(
        [sys.executable, "-m", "pipeline.cli", "run", "--data-root", data_root, "--weights",
         weights, "--outputs", output, "--no-report"])
  accuracy = float(re.search(r"Evaluation on the test split: accuracy ([0-9.]+)", text).group(1))
  result = {
      "data_root": shown(data_root),
      "plain_keras": {"seconds": round(plain_seconds, 1), "test_accuracy": plain["test_accuracy"],
                      "peak_rss_mb": plain_rss},
      "pipeline": {"seconds": round(pipeline_seconds, 1), "test_accuracy": accuracy,
                   "peak_rss_mb": pipeline_rss},
      "ratio_pipeline_over_plain": round(pipeline_seconds / plain_seconds, 2),
      "target": {"ratio": 0.5, "test_accuracy": "at least the plain script's"},
  }
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results" / "compare.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()

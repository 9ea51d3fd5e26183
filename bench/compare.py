"""Side by side: the pipeline against the plain Keras script a user would write.

Usage: python bench/compare.py [DATA_ROOT] [WEIGHTS_DIR]
  (defaults: ../shared/data/cats_vs_dogs and ../shared/weights)
Runs bench/plain_keras.py (TensorFlow's transfer-learning tutorial, 5 + 5
epochs, 224 px), then `finetune run` from an empty output folder twice: at
the defaults (phase 2 only when the head alone falls short), and with phase 2
forced (train.phase2_max_accuracy=1), the same two-phase work as the plain
script. One after the other, each in its own process. Prints and writes
bench/results/compare.json: wall time, test accuracy and peak resident memory
of each, and the ratio of the times (pipeline / plain) for each row.
Targets: ratio <= 0.16 at the defaults and <= 0.5 on the same work, at equal
or better test accuracy.
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
  result = {
      "data_root": shown(data_root),
      "plain_keras": {"seconds": round(plain_seconds, 1), "test_accuracy": plain["test_accuracy"],
                      "peak_rss_mb": plain_rss},
  }
  rows = {"pipeline": [], "pipeline_phase2_forced": ["--set", "train.phase2_max_accuracy=1"]}
  for row, settings in rows.items():
    with tempfile.TemporaryDirectory() as output:
      seconds, rss, text = measure(
          [sys.executable, "-m", "pipeline.cli", "run", "--data-root", data_root, "--weights",
           weights, "--outputs", output, "--no-report", *settings])
    accuracy = float(re.search(r"Evaluation on the test split: accuracy ([0-9.]+)",
                               text).group(1))
    result[row] = {"seconds": round(seconds, 1), "test_accuracy": accuracy, "peak_rss_mb": rss,
                   "ratio_over_plain": round(seconds / plain_seconds, 2)}
  result["target"] = {"ratio_pipeline": 0.16, "ratio_pipeline_phase2_forced": 0.5,
                      "test_accuracy": "at least the plain script's"}
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results" / "compare.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()

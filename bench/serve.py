"""Serving benchmark: the pushed model's `predict_images` signature, in process.

Usage: python bench/serve.py MODEL PHOTOS [--requests N]
  MODEL   a pushed model folder (numeric versions) or a SavedModel folder
  PHOTOS  a folder of real photos (searched recursively), e.g. a test split
Writes bench/results/serve.json: the p50 and p99 latency of single-photo
requests (the bytes a TF Serving REST client sends), throughput at batch 32,
and the time from process start to the first prediction of `finetune predict`.
One warm-up call first. Target: p50 <= 30 ms at 224 px on 2 CPU cores.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from pipeline.cli.predict import IMAGES_INPUT, load_serving_model, resolve_model_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 32
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("model")
  parser.add_argument("photos")
  parser.add_argument("--requests", type=int, default=300)
  args = parser.parse_args()
  import tensorflow as tf

  paths = sorted(p for p in pathlib.Path(args.photos).rglob("*")
                 if p.suffix.lower() in PHOTO_SUFFIXES)[:args.requests]
  photos = [p.read_bytes() for p in paths]
  signature = load_serving_model(args.model)
  signature(**{IMAGES_INPUT: tf.constant(photos[:1])})  # warm-up: traces and allocates

  latencies = []
  for photo in photos:
    began = time.perf_counter()
    signature(**{IMAGES_INPUT: tf.constant([photo])})["probabilities"].numpy()
    latencies.append((time.perf_counter() - began) * 1000)

  batches = [photos[i:i + BATCH] for i in range(0, len(photos) - BATCH + 1, BATCH)]
  began = time.perf_counter()
  for batch in batches:
    signature(**{IMAGES_INPUT: tf.constant(batch)})["probabilities"].numpy()
  throughput = len(batches) * BATCH / (time.perf_counter() - began)

  # What a user waits for: process start to the first answer of `finetune predict`.
  began = time.perf_counter()
  subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", "--model", args.model,
                  str(paths[0])], check=True, capture_output=True, cwd=ROOT)
  first_prediction = time.perf_counter() - began

  result = {
      "model": "/".join(pathlib.Path(resolve_model_dir(args.model)).parts[-2:]),  # name/version
      "photos": args.photos,
      "requests": len(latencies),
      "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                     "p99": round(float(np.percentile(latencies, 99)), 1),
                     "mean": round(float(np.mean(latencies)), 1)},
      "batch": BATCH,
      "throughput_images_per_second": round(throughput, 1),
      "predict_command_first_answer_seconds": round(first_prediction, 1),
      "target": {"latency_p50_ms": 30},
  }
  print(json.dumps(result, indent=1))
  out = ROOT / "bench" / "results" / "serve.json"
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"Wrote {out}")


if __name__ == "__main__":
  main()

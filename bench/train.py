"""Training benchmark: the default pipeline, end to end, on the real photos.

Usage: python bench/train.py [DATA_ROOT] [WEIGHTS] [--set key=value ...]
  (defaults: ../shared/data/cats_vs_dogs and ../shared/weights)
Runs `finetune run` with the default configuration into a fresh output folder,
then prints and writes bench/results/train.json (train-<name>.json for other
data, e.g. train-flowers.json): per phase the epochs, wall time and training
images per second; validation accuracy of the exported model; the test
accuracy, balanced accuracy and per-class recall; and each component's duration.
Targets: cats vs dogs, test accuracy >= 0.98 and training < 8 minutes (2 CPU
cores); flowers, test accuracy >= 0.80.
"""
import argparse
import json
import pathlib
import tempfile
import time

import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from components.blessing import read_verdict
from components.evaluation import read_accuracy
from components.data_facts import report_path
from components.trainer.train import HISTORY_FILE, SUMMARY_FILE, best_epoch
from pipeline.config import load_config
from pipeline.local_runner import run_pipeline
from shown import shown  # noqa: E402  (bench/ is on the path)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGETS = {"cats-vs-dogs": {"test_accuracy": 0.98, "training_seconds": 480},
           "flowers": {"test_accuracy": 0.80}}
SHARED = ROOT.parent / "shared"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("data_root", nargs="?", default=str(SHARED / "data" / "cats_vs_dogs"))
  parser.add_argument("weights", nargs="?", default=str(SHARED / "weights"))
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as output:
    config = load_config(overrides={"data.root": args.data_root, "output_dir": output,
                                    "train.weights": args.weights,
                                    **dict(s.split("=", 1) for s in args.set)}).validate()
    began = time.time()
    run = run_pipeline(config)
    wall = time.time() - began
    model_dir = pathlib.Path(run.artifact("Trainer", "model").uri)
    history = json.loads((model_dir / HISTORY_FILE).read_text())
    summary = json.loads((model_dir / SUMMARY_FILE).read_text())
    report = json.loads(pathlib.Path(report_path(run.artifact("ImageExampleGen", "examples").uri))
                        .read_text())
    test_accuracy = read_accuracy(run.artifact("Evaluator", "evaluation").uri, "candidate")
    verdict = read_verdict(run.artifact("BlessingGate", "blessing").uri)

  train_images = sum(report["examples"]["train"].values())
  validation_images = sum(report["examples"]["validation"].values())
  phases = {}
  for phase, info in summary["phases"].items():
    rows = [r for r in history if r["phase"] == int(phase)]
    if not rows:  # skipped (train.phase2_max_accuracy)
      phases[phase] = {"epochs": 0, "seconds": 0.0, "skipped": info.get("skipped")}
      continue
    phases[phase] = {
        "epochs": info["epochs"], "seconds": info["seconds"],
        "trainable_params": info["trainable_params"],
        # One epoch = a pass over the training photos (or their features) plus a validation pass.
        "train_images_per_second": round(train_images * info["epochs"] / info["seconds"], 1),
        "best_epoch": best_epoch(history, int(phase))["epoch"],  # the one early stopping kept
    }
    if "feature_seconds" in info:  # phase 1 on base features computed once
      phases[phase]["feature_seconds"] = info["feature_seconds"]
      phases[phase]["feature_images_per_second"] = round(
          (train_images + validation_images) / info["feature_seconds"], 1)
  kept = summary["exported"]  # the best epoch on validation, across both phases
  result = {
      "data_root": shown(args.data_root), "weights": shown(args.weights),
      "base_model": summary["base_model"], "image_size": summary["config"]["image_size"],
      "train_examples": train_images,
      "phases": phases,
      "training_seconds": round(sum(p["seconds"] for p in phases.values()), 1),
      "exported": {"phase": kept["phase"], "epoch": kept["epoch"]},
      "validation_accuracy": round(kept["val_accuracy"], 4),
      "test_accuracy": round(test_accuracy, 4),
      "test_recall_per_class": {k: round(v, 4) for k, v in verdict["recall"].items()},
      "test_balanced_accuracy": round(verdict["balanced_accuracy"], 4),
      "blessed": verdict["blessed"],
      "pipeline_seconds": round(wall, 1),
      "component_seconds": {n: round(r.seconds, 1) for n, r in run.nodes.items()},
      "targets": TARGETS.get(config.pipeline_name, {}),
  }
  print(json.dumps(result, indent=1))
  (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
  name = "train" if config.pipeline_name == "cats-vs-dogs" else f"train-{config.pipeline_name}"
  (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()

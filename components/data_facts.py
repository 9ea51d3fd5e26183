"""What ingestion decided about the photos, kept in the Examples artifact.

ImageExampleGen finds the layout, the class names (label i is the i-th) and
the size the photos suggest for training when it runs; every later task reads
them here. Nothing about the data is fixed when the pipeline is built, so a
package compiled once follows its bucket.
"""
from __future__ import annotations

import json
import posixpath

import tensorflow as tf

REPORT_DIR = "ingestion"


def report_path(examples_uri: str) -> str:
  """Every file under the data root: example, rejection with its reason, or ignored."""
  return posixpath.join(examples_uri, REPORT_DIR, "report.json")


def labels_path(examples_uri: str) -> str:
  """{"class_names": [...], "image_size": the photos' own training size}."""
  return posixpath.join(examples_uri, REPORT_DIR, "labels.json")


def write_facts(examples_uri: str, class_names: list[str], image_size: int) -> None:
  with tf.io.gfile.GFile(labels_path(examples_uri), "w") as f:
    json.dump({"class_names": list(class_names), "image_size": image_size}, f)


def _facts(examples_uri: str) -> dict:
  with tf.io.gfile.GFile(labels_path(examples_uri)) as f:
    return json.load(f)


def class_names(examples_uri: str) -> list[str]:
  return _facts(examples_uri)["class_names"]


def training_size(examples_uri: str, setting: int) -> int:
  """train.image_size, or with 0 (automatic) the size ingestion chose from the photos."""
  return int(setting) or int(_facts(examples_uri)["image_size"])

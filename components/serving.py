"""The served model folder, read as TF Serving reads it (local path or bucket URI)."""
import posixpath

import tensorflow as tf


def served_versions(model_base_dir: str) -> dict[int, str]:
  """Version -> folder. TF Serving's rule: numeric folders holding saved_model.pb
  are versions; anything else (temporary or moved-aside folders) is ignored."""
  if not tf.io.gfile.isdir(model_base_dir):
    return {}
  found = {}
  for name in tf.io.gfile.listdir(model_base_dir):
    name = name.rstrip("/")
    folder = posixpath.join(model_base_dir, name)
    if name.isdigit() and tf.io.gfile.exists(posixpath.join(folder, "saved_model.pb")):
      found[int(name)] = folder
  return found

"""Where a base model's pretrained weights come from.

  imagenet          Keras downloads them (online users)
  none              random initialisation (tests)
  path/to/file.h5   that file
  path/to/folder/   a folder of files named as Keras caches them
                    (air-gapped clusters: copy ~/.keras/models there)
  s3://... gs://... such a file or folder in a bucket (Kubeflow pods)
"""
from __future__ import annotations

import os
import tempfile

import tensorflow as tf

# Keras' own file names for the include_top=False weights of each base.
_FILE_NAMES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnet_b0": "efficientnetb0_notop.h5",
}
_MOBILENET_V2_SIZES = (224, 192, 160, 128, 96)


class WeightsNotFoundError(FileNotFoundError):
  """The configured weights cannot be found; never fall back to random."""


def candidate_file_names(base_model: str, alpha: float, image_size: int) -> list[str]:
  """File names Keras would use, best match first."""
  if base_model == "mobilenet_v2":
    # Keras names the file by input size; the weights work at any size,
    # so prefer the exact size, then the others.
    sizes = sorted(_MOBILENET_V2_SIZES, key=lambda s: (s != image_size, -s))
    return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{s}_no_top.h5"
            for s in sizes]
  return [_FILE_NAMES[base_model]]


def resolve_weights(spec: str, base_model: str, alpha: float = 1.0,
                    image_size: int = 224) -> str | None:
  """The value for keras.applications' `weights=` argument."""
  if spec in ("none", "", None):
    return None
  if spec == "imagenet":
    return "imagenet"
  if tf.io.gfile.isdir(spec):
    names = candidate_file_names(base_model, alpha, image_size)
    for name in names:
      path = os.path.join(spec, name)
      if tf.io.gfile.exists(path):
        return path
    raise WeightsNotFoundError(
        f"No weights for {base_model}"
        f"{f' (alpha {alpha:g})' if base_model == 'mobilenet_v2' else ''} in folder {spec}: "
        f"expected a file named {names[0]}")
  if tf.io.gfile.exists(spec):
    return spec
  raise WeightsNotFoundError(
      f"Weights file not found: {spec} (use 'imagenet', 'none', a .h5 file or a folder)")


def local_weights(path: str | None) -> str | None:
  """A weights file Keras can open: one in a bucket is copied to a local file
  first (HDF5 reads local files only)."""
  if not path or "://" not in path:
    return path
  local = os.path.join(tempfile.mkdtemp(prefix="finetune-weights-"), os.path.basename(path))
  tf.io.gfile.copy(path, local)
  return local

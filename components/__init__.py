"""What each pipeline stage does: custom components and model code.

Every entry point (the `finetune` CLI, TFX executors, Beam workers, Kubeflow
containers) imports this package before TensorFlow, so this is the one place
that selects Keras 2 (tf-keras): TFX 1.16, TFT and TFMA are built on it,
and the CPU memory allocator.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's BFC allocator keeps freed CPU buffers for reuse. The default
# allocator hands large activations back to the OS after every step, and the
# page faults to get them again cost as much time as the convolutions.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def __getattr__(name):
  # On Kubeflow, TFX imports a custom artifact type by its type name, which it
  # requires to be "<namespace>.<Class>": components.DataChange.
  if name == "DataChange":
    from components.new_data import DataChange  # pylint: disable=import-outside-toplevel
    return DataChange
  raise AttributeError(f"module 'components' has no attribute {name!r}")

"""What each pipeline stage does: custom components and model code.

Every entry point (the `finetune` CLI, TFX executors, Beam workers, Kubeflow
containers) imports this package before TensorFlow, so this is the one place
that selects Keras 2 (tf-keras): TFX 1.16, TFT and TFMA are built on it.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

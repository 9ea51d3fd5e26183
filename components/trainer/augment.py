"""Training-only augmentation: rotation, zoom and shift as one resampling.

Keras' RandomRotation, RandomZoom and RandomTranslation each resample the
whole image; composing the three into one affine transform per image gives
the same distribution of images for a third of the interpolation work, which
on a CPU is a large share of a frozen-base training step.
"""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras


class RandomAffine(keras.__internal__.layers.BaseRandomLayer):
  """Random rotation (fraction of a turn), zoom (±fraction) and shift (fraction
  of the side), like the Keras layers of the same names; identity unless training."""

  def __init__(self, rotation: float = 0.0, zoom: float = 0.0, translation: float = 0.0,
               seed: int | None = None, **kwargs):
    super().__init__(seed=seed, force_generator=True, **kwargs)
    self.rotation, self.zoom, self.translation, self.seed = rotation, zoom, translation, seed

  def call(self, images, training=None):
    if training is None:
      training = keras.backend.learning_phase()
    return tf.__internal__.smart_cond.smart_cond(
        training, lambda: self._augment(images), lambda: images)

  def _augment(self, images):
    shape = tf.shape(images)
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

    def uniform(limit):
      return self._random_generator.random_uniform([batch], -limit, limit)

    angle = uniform(self.rotation * 2 * math.pi)
    scale = 1.0 + uniform(self.zoom)  # > 1 shows more of the photo (zoom out)
    shift_x, shift_y = uniform(self.translation) * width, uniform(self.translation) * height
    # Output pixel (x, y) samples input pixel A (x - c) + c - shift, A = scale * rotation.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([cos, -sin, cx - shift_x - cos * cx + sin * cy,
                           sin, cos, cy - shift_y - sin * cx - cos * cy,
                           zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom,
            "translation": self.translation, "seed": self.seed}

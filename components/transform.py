"""TensorFlow Transform: raw image bytes -> fixed-size RGB pixels.

The same graph runs in training and inside the served model, so clients send
the original JPEG/PNG/GIF/BMP bytes and get exactly the training-time pixels.

Materialization: the pipeline runs Transform with `materialize=False`. Decoded
pixels are 224*224*3*4 = 600 KB per image (float32), about 13x the JPEG; writing
them would multiply the disk footprint and the I/O of every epoch, and would
not scale to large datasets. Instead the Trainer applies this graph on the fly
while reading the raw records, and caches the decoded images (uint8, 4x
smaller than float32) in a scratch folder on disk (TrainConfig.cache_images).
"""
import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)

import tensorflow as tf

IMAGE_KEY = "image_raw"
LABEL_KEY = "label"
TRANSFORMED_IMAGE_KEY = "image"


def decode_and_resize(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
  """A batch of encoded images [N] -> float32 pixels 0..255 [N, size, size, 3]."""

  def decode_one(encoded):
    # channels=3 turns grayscale/palette/RGBA into RGB; GIFs give their first frame.
    # JPEGs with the accurate DCT: TensorFlow's default (fast) one blurs detail
    # that other decoders (Pillow, browsers) keep.
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    # Squash to a square (nothing is cropped away); antialias for clean downscaling.
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.round(tf.clip_by_value(image, 0.0, 255.0))  # whole values: uint8-safe

  return tf.map_fn(
      decode_one, tf.reshape(image_bytes, [-1]),
      fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


def preprocessing_fn(inputs, custom_config):
  outputs = {TRANSFORMED_IMAGE_KEY: decode_and_resize(
      inputs[IMAGE_KEY], int(custom_config["image_size"]))}
  if LABEL_KEY in inputs:  # absent at serving time
    outputs[LABEL_KEY] = tf.reshape(inputs[LABEL_KEY], [-1])
  return outputs

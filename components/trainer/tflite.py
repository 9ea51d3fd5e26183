"""The on-device export (serving.tflite: off | float16 | int8).

TensorFlow Lite has no JPEG/PNG decoder among its built-in ops, so the
`.tflite` model takes what the Transform graph makes of a photo: RGB pixels,
0-255 floats, resized to the training size. Apps decode and resize the photo
themselves (as `finetune predict --model x.tflite` does, with the project's
own decode and resize, EXIF orientation included). It outputs the class
probabilities: one column per class, in the order of the model card's classes.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

KINDS = ("off", "float16", "int8")
FILE_NAME = "model.tflite"
CALIBRATION_BATCHES = 8  # int8: activation ranges from this many training batches


def export_tflite(model, image_size: int, kind: str, path: str, calibration=None) -> int:
  """Writes the model as TFLite to `path`; returns its size in bytes.

  `calibration`: batches of (pixels, label), training photos (int8 only).
  """
  two_classes = model.output_shape[-1] == 1  # a single sigmoid unit: P(class 1)

  @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                              name="pixels")])
  def probabilities(pixels):
    p = model(pixels, training=False)
    return tf.concat([1.0 - p, p], axis=1) if two_classes else p

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [probabilities.get_concrete_function()], model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if kind == "float16":
    converter.target_spec.supported_types = [tf.float16]
  elif kind == "int8":
    def representative():
      for pixels, _ in calibration.take(CALIBRATION_BATCHES):
        for image in pixels:
          yield [image[tf.newaxis]]
    converter.representative_dataset = representative
  else:
    raise ValueError(f"serving.tflite must be one of {', '.join(KINDS)}, got {kind!r}")
  content = converter.convert()
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(content)
  return len(content)


def predict_pixels(tflite_path: str, pixels: np.ndarray) -> np.ndarray:
  """Class probabilities [N, C] for pixels [N, size, size, 3] (0-255 floats)."""
  with tf.io.gfile.GFile(tflite_path, "rb") as f:
    interpreter = tf.lite.Interpreter(model_content=f.read())
  (given,), (answer,) = interpreter.get_input_details(), interpreter.get_output_details()
  rows = []
  for image in pixels:  # one photo per call, as on a phone
    interpreter.resize_tensor_input(given["index"], [1, *image.shape])
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], image[np.newaxis].astype(np.float32))
    interpreter.invoke()
    rows.append(interpreter.get_tensor(answer["index"])[0])
  return np.array(rows)


def tflite_accuracy(tflite_path: str, split_uri: str, image_size: int) -> float:
  """Accuracy on a split's examples, decoded and resized as the Transform graph does."""
  from components.transform import decode_and_resize
  spec = {"image_raw": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([], tf.int64)}
  files = tf.io.gfile.glob(os.path.join(split_uri, "*.gz"))
  right = total = 0
  for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(32):
    parsed = tf.io.parse_example(batch, spec)
    pixels = decode_and_resize(parsed["image_raw"], image_size).numpy()
    predicted = predict_pixels(tflite_path, pixels).argmax(axis=1)
    right += int((predicted == parsed["label"].numpy()).sum())
    total += len(predicted)
  return right / total

"""Model code: the Keras model, the two-phase fine-tune and the export."""
import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)

from tensorflow.python.autograph.core import config as _autograph_config

# AutoGraph leaves the `keras` package alone but not `tf_keras`, the Keras 2
# that TFX runs on: tracing a model then rewrites every Keras layer's Python
# code, which took 30 s of the first MobileNetV2 training step here instead
# of 4 s, again for each phase, the validation pass and the export. Keras'
# own code is graph-safe and does not need the rewrite.
if not any(isinstance(rule, _autograph_config.DoNotConvert) and rule.matches("tf_keras")
           for rule in _autograph_config.CONVERSION_RULES):
  _autograph_config.CONVERSION_RULES = (
      _autograph_config.DoNotConvert("tf_keras"),) + _autograph_config.CONVERSION_RULES

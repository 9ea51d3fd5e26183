"""How the stages are put together and run."""
import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)

"""ImageExampleGen: folders of photos into TFRecords.

Its names load on first use: `predict` and `check` want the photo checks
(images.py, layout.py) without TFX, which takes 8 s to import.
"""


def __getattr__(name):
  # pylint: disable=import-outside-toplevel
  if name == "ImageExampleGen":
    from components.image_example_gen.component import ImageExampleGen
    return ImageExampleGen
  if name in ("DataLayoutError", "detect_layout"):
    from components.image_example_gen import layout
    return getattr(layout, name)
  raise AttributeError(f"module 'components.image_example_gen' has no attribute {name!r}")

"""SchemaImporter: the dataset's schema file as a Schema artifact.

Like TFX's ImportSchemaGen, plus the file's content hash as a parameter: TFX
reuses a cached execution when the parameters are unchanged, so without it
an edited schema would not be applied until the data changed too.
"""
import hashlib
import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Schema

SCHEMA_FILE_NAME = "schema.pbtxt"  # where TFX's schema readers look


def content_hash(path: str) -> str:
  with tf.io.gfile.GFile(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@component
def SchemaImporter(schema: OutputArtifact[Schema], schema_file: Parameter[str],
                   schema_sha256: Parameter[str]):
  if content_hash(schema_file) != schema_sha256:
    raise RuntimeError(f"{schema_file} changed after the pipeline was built; run it again")
  tf.io.gfile.copy(schema_file, os.path.join(schema.uri, SCHEMA_FILE_NAME), overwrite=True)

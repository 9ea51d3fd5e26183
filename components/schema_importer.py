"""SchemaImporter: the dataset's schema, carried in the pipeline itself.

Like TFX's ImportSchemaGen, but the schema's text is the parameter, not a
path: TFX and Kubeflow reuse a cached execution while the parameters are
unchanged, so an edited schema is applied at once, and a Kubeflow task needs
no access to the file the pipeline was built from.
"""
import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Schema

SCHEMA_FILE_NAME = "schema.pbtxt"  # where TFX's schema readers look


@component
def SchemaImporter(schema: OutputArtifact[Schema], schema_text: Parameter[str],
                   schema_source: Parameter[str]):
  """Writes `schema_text` (read from `schema_source` when the pipeline was built)."""
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  text_format.Parse(schema_text, schema_pb2.Schema())  # fails here, naming the file, if invalid
  with tf.io.gfile.GFile(os.path.join(schema.uri, SCHEMA_FILE_NAME), "w") as f:
    f.write(schema_text)
  schema.set_string_custom_property("source", schema_source)

"""What TFX ships to Beam workers: nothing when the DirectRunner runs the work.

Before every Beam component (ImageExampleGen, StatisticsGen, Transform,
Evaluator) TFX copies its own install into a temporary folder and builds an
sdist of it (2-3 s, more on a busy machine) for remote workers to install.
The DirectRunner's workers share this process's environment, locally and in a
Kubeflow task alike, so both runners skip it there.
"""
from __future__ import annotations

from tfx.utils import dependency_utils

from pipeline.config import uses_direct_runner


def skip_tfx_sdist_on_direct_runner() -> None:
  if getattr(dependency_utils.make_beam_dependency_flags, "direct_runner_aware", False):
    return
  make_flags = dependency_utils.make_beam_dependency_flags

  def flags(beam_pipeline_args):
    return (beam_pipeline_args if uses_direct_runner(beam_pipeline_args)
            else make_flags(beam_pipeline_args))

  flags.direct_runner_aware = True
  dependency_utils.make_beam_dependency_flags = flags

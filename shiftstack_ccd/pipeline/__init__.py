# Licensed under a 3-clause BSD style license - see LICENSE
"""Pipeline files: a whole reduction described in one TOML file, checked before it runs.

``load`` reads and validates a file (`load_pipeline`, `run_pipeline`); ``core`` is the
validated `Pipeline` and how it runs. Private: ``_toml`` (line numbers of the keys),
``_params`` (the parameters and types of a step), ``_checker`` (collecting problems).
The format is described in :doc:`/pipelines`.
"""

from ..exceptions import PipelineError  # noqa: F401 - importable from here, as it always was
from .core import *  # noqa: F401, F403
from .load import *  # noqa: F401, F403

"""The one code location: its module and its name, the same for every entry point.

``workspace.yaml`` (``location_name``), ``pyproject.toml`` (``[tool.dagster] code_location_name`` for
``dagster dev``, ``[tool.dg.project] code_location_name`` for ``dg dev``/``dg launch``) and the code that creates
runs itself (``services/exports.py``) all use :data:`LOCATION_NAME`. Dagster keys sensor cursors, schedules and
a run's origin on the location name, so a second name would restart the staging sensor's cursor and leave the
daemon unable to launch a queued run created under the other name. A test checks the files agree.
"""

DEFINITIONS_MODULE = "datalake_pipelines.definitions"
LOCATION_NAME = "datalake_pipelines"

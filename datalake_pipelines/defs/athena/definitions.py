"""The Athena domain's definitions, for ``dg.Definitions.merge`` into the code location."""

import dagster as dg

from .assets import athena_tables
from .resources import athena_settings_from_env

defs = dg.Definitions(assets=[athena_tables], resources={"athena": athena_settings_from_env()})

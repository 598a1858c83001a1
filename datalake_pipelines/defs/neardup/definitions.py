"""The near-duplicates domain's definitions: the lake-wide ``near_duplicates`` report asset."""

import dagster as dg

from .assets import near_duplicates

defs = dg.Definitions(assets=[near_duplicates])

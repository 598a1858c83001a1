"""``AthenaSettings``: where the Glue tables live and where Athena writes query results."""

import boto3
import dagster as dg

from ...core.athena.client import AthenaClient
from ...lib.resources import env_or
from ...settings import (
    ATHENA_DATABASE_ENV,
    ATHENA_OUTPUT_ENV,
    ATHENA_REGION_ENV,
    ATHENA_WORKGROUP_ENV,
    DEFAULT_ATHENA_DATABASE,
)

# dagster-aws's AthenaClientResource is not used: it has no region or database fields and only runs SQL through
# Athena, while the tables are registered through the Glue API and queries need ExecutionParameters.


class AthenaSettings(dg.ConfigurableResource):
    """Glue database and Athena query settings. Empty ``s3_output`` means ``<lake base>/athena-results/``;
    empty ``workgroup``/``region`` mean Athena's primary workgroup and the AWS environment's region."""

    database: str = DEFAULT_ATHENA_DATABASE
    s3_output: str = ""
    workgroup: str = ""
    region: str = ""

    def output_location(self, lake_base: str) -> str:
        return self.s3_output or f"{lake_base.rstrip('/')}/athena-results/"

    def glue_client(self):
        return boto3.client("glue", region_name=self.region or None)

    def client(self, lake_base: str) -> AthenaClient:
        return AthenaClient(self.database, self.output_location(lake_base), self.workgroup or None, self.region or None)


def athena_settings_from_env() -> AthenaSettings:
    """Settings from ``DATALAKE_ATHENA_DATABASE``, ``_OUTPUT``, ``_WORKGROUP`` and ``_REGION`` (all optional)."""
    return AthenaSettings(
        database=env_or(ATHENA_DATABASE_ENV, DEFAULT_ATHENA_DATABASE),
        s3_output=env_or(ATHENA_OUTPUT_ENV, ""),
        workgroup=env_or(ATHENA_WORKGROUP_ENV, ""),
        region=env_or(ATHENA_REGION_ENV, ""),
    )

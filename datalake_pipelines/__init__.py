"""datalake_pipelines: a Dagster-orchestrated data lake for multimodal ML datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import DatalakeClient
    from .core.athena.client import AthenaClient
    from .core.catalog.dataset import catalog_dataset
    from .core.catalog.query import DuckDBClient

__all__ = ["AthenaClient", "DatalakeClient", "DuckDBClient", "catalog_dataset"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import datalake_pipelines` cheap for the CLI and the Dagster code location.
    if name == "DatalakeClient":
        from .client import DatalakeClient

        return DatalakeClient
    if name == "DuckDBClient":
        from .core.catalog.query import DuckDBClient

        return DuckDBClient
    if name == "AthenaClient":
        from .core.athena.client import AthenaClient

        return AthenaClient
    if name == "catalog_dataset":
        from .core.catalog.dataset import catalog_dataset

        return catalog_dataset
    raise AttributeError(name)

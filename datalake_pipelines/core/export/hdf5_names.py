"""Column names as HDF5 dataset names: a recorded, reversible rule.

HDF5 link names cannot hold ``/`` (the path separator: a column ``/lead`` would be written at the file's root,
``a/b`` inside a group ``a``) and ``.`` names the group itself; the export also keeps a ``_nulls`` group beside
the columns. So a dataset name is the column name with ``%`` and ``/`` percent-encoded (``%25``, ``%2F``), a
leading ``.`` encoded (``%2E``: covers ``.``, ``..`` and hidden-looking names) and the name ``_nulls`` encoded
(``%5Fnulls``); every other character is kept. Decoding is ``urllib.parse.unquote`` (``%`` itself is always
encoded, so it is unambiguous). Each dataset also carries the original name in its ``column`` attribute and each
group's ``schema`` attribute lists ``{"name": <column>, "dataset": <dataset name>, ...}``.
"""

from __future__ import annotations

from urllib.parse import unquote

from ..errors import CodedError

NULLS = "_nulls"
HDF5_UNSUPPORTED = "hdf5_unsupported_column"


class Hdf5UnsupportedColumnError(CodedError):
    """A column the HDF5 export cannot hold; raised before any row is written."""

    code = HDF5_UNSUPPORTED


def dataset_name(column: str) -> str:
    """The HDF5 dataset name of ``column`` (see the module docstring); ``column_name`` reverses it."""
    if not column:
        raise Hdf5UnsupportedColumnError("a column with an empty name cannot be an HDF5 dataset")
    name = column.replace("%", "%25").replace("/", "%2F")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return "%5F" + name[1:] if name == NULLS else name


def column_name(dataset: str) -> str:
    """The column name a dataset name was made from."""
    return unquote(dataset)

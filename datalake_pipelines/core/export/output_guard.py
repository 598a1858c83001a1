"""Where ``datalake preview``, ``datalake download``, ``datalake near-dups --out`` and ``datalake profile --png`` may
write, and what ``--overwrite`` may replace.

One rule for all of them (:func:`check_output`):

- the output is a local path: a URI (``s3://bucket/x``, ``https://...``) is refused rather than taken as a folder
  named ``s3:`` under the working directory; writing to S3 is what ``datalake export create --destination
  s3://...`` (``DatalakeClient.create_export``) does;
- the output may not be the lake's base folder, lie inside it, or contain it (paths compared after resolving
  symlinks): replacing it would delete the lake's catalog or assets;
- an existing output is replaced only with ``overwrite``, and only when it is something these commands wrote:
  a folder holding their marker file (``index.html`` and ``thumbs/`` for a gallery, ``download.json`` for a
  download) or an empty folder; for ``--png`` an existing regular file. Anything else (a regular file where a
  folder goes, a folder of other content, a folder where a PNG goes) is refused, overwrite or not.

Refusals raise :class:`OutputPathError` (a ``ValueError``) naming the path and, for the lake rule, the lake.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import CodedError
from ..storage.backends import storage_kind

GALLERY_MARKERS = ("index.html", "thumbs")  # both must be present
DOWNLOAD_MARKERS = ("download.json",)


class OutputPathError(CodedError):
    """An output path that may not be written or replaced."""

    code = "bad_output_path"


# scheme:/ or scheme://: also an s3:// URI that went through Path (s3:/bucket); a drive letter (C:/) is no scheme
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def lake_folder(lake: object) -> Path | None:
    """The local base folder of ``lake`` (a ``LakeLayout``, a ``LakeSource``, a path or ``s3://...``), resolved;
    None for an S3 lake (nothing local to protect)."""
    base = getattr(lake, "base", lake)
    if base is None or storage_kind(str(base)) == "s3":
        return None
    return Path(str(base)).expanduser().resolve()


def check_output(
    out: str | os.PathLike,
    lake: object,
    overwrite: bool,
    markers: Sequence[str] = (),
    kind: str = "folder",
) -> Path:
    """Check that ``out`` may be written; return it resolved (symlinks followed).

    ``lake``: see :func:`lake_folder`. ``kind`` is ``"folder"`` (``markers``: names that must all exist in an
    existing folder for ``overwrite`` to replace it; an empty folder may always be replaced) or ``"file"``.
    Raises :class:`OutputPathError` for a URI (outputs are local), an output overlapping the lake or an existing
    output that is not ours to replace, and ``FileExistsError`` for an existing output without ``overwrite``."""
    if URI.match(os.fspath(out)):
        raise OutputPathError(
            f"output {os.fspath(out)} is a URI: downloads, previews, near-duplicate pages and profile figures are "
            f"written to a local {'file' if kind == 'file' else 'folder'}; to write to S3 use "
            "`datalake export create --destination s3://bucket/prefix` (DatalakeClient.create_export)"
        )
    path = Path(out).expanduser().resolve()
    base = lake_folder(lake)
    if base is not None and (_is_within(path, base) or _is_within(base, path)):
        where = "is the lake" if path == base else "is inside the lake" if _is_within(path, base) else "holds the lake"
        raise OutputPathError(f"output {path} {where} at {base}; choose a folder outside the lake")
    if not (path.exists() or path.is_symlink()):
        return path
    if kind == "file":
        if not path.is_file():
            raise OutputPathError(f"output {path} exists and is not a regular file; it is never replaced")
    elif not path.is_dir():
        raise OutputPathError(f"output {path} exists and is not a folder; it is never replaced")
    elif any(path.iterdir()) and not all((path / m).exists() for m in markers):
        wanted = " and ".join(markers) or "nothing"
        raise OutputPathError(
            f"output {path} exists and was not written by this command (no {wanted} in it); it is never replaced"
        )
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    return path


def write_file(out: str | os.PathLike, data: bytes, lake: object, overwrite: bool) -> Path:
    """Write ``data`` to the file ``out`` under :func:`check_output`'s rule, creating missing parent folders;
    the file is written to a hidden sibling and renamed into place. Returns the resolved path."""
    path = check_output(out, lake, overwrite, kind="file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def staged_folder(
    out_dir: str | os.PathLike, overwrite: bool = False, lake: object = None, markers: Sequence[str] = GALLERY_MARKERS
) -> Iterator[tuple[Path, Path]]:
    """Yield ``(tmp, out)``: write the folder's content into ``tmp`` (a hidden sibling of ``out``); on a clean
    exit it is renamed to ``out``, on an error it is removed and ``out`` is left as it was.

    ``out`` is checked by :func:`check_output` against ``lake`` (never the lake, inside it
    or holding it; only a folder holding ``markers`` or an empty one is replaced: ``OutputPathError``). It is never
    replaced unless ``overwrite``: it is claimed with ``os.mkdir`` first (``FileExistsError`` when it exists).
    With ``overwrite`` the old folder is removed only after the new one is complete."""
    out = check_output(out_dir, lake, overwrite, markers)
    out.parent.mkdir(parents=True, exist_ok=True)
    claimed = False
    if not overwrite:
        try:
            out.mkdir()  # the claim: atomic, so of two writers racing to one folder exactly one gets here
        except FileExistsError:
            raise FileExistsError(
                f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
            ) from None
        claimed = True
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        yield tmp, out
        if claimed:
            os.rename(tmp, out)  # onto our own empty claim; fails (ENOTEMPTY) if someone wrote into it
        elif out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if claimed:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise

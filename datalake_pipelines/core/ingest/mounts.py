"""Which file system a path lives on, from the mount table: the guard that keeps SQLite's WAL off network shares.

SQLite's WAL mode keeps its index of the log in shared memory (an mmap of ``-shm``), which is only coherent
between processes of one host: "WAL does not work over a network filesystem" (https://www.sqlite.org/wal.html).
The rollback journal instead relies on the share's byte-range locks, which many NFS and SMB servers get wrong
(https://www.sqlite.org/howtocorrupt.html, section 2.1). So a hash index on a network share is refused with an
error naming ``DATALAKE_INDEX_URL`` rather than quietly switched to ``journal_mode=DELETE``: a fallback would
trade today's hang for a corruption that shows up later, once a second host shares the lake, and a lake on a NAS
is exactly the setup where a second host appears. Postgres is the index made for several hosts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatalakeError

# Network and cluster file systems: none gives the one-host shared memory WAL needs. 9p is included (WSL2's
# Windows drives, VM shares: its locks are advisory no-ops); fuse.sshfs has no locks at all. The object-store FUSE
# mounts (s3fs, rclone, gcsfuse, goofys, mountpoint-s3) do no POSIX locks either, and the cluster clients
# (ceph-fuse, JuiceFS, WekaFS) share one file between hosts, which is what breaks WAL.
NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
        "beegfs", "wekafs", "juicefs", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.ceph-fuse",
        "fuse.juicefs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "fuse.goofys", "fuse.mountpoint-s3",
    }
)  # fmt: skip


class NetworkFileSystem(DatalakeError):
    """A SQLite index on a network file system (the message says what to do instead; the CLI prints it as is)."""


def _unescape(field: str) -> str:
    """A mount-table field with its octal escapes (``\\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def mount_of(path: Path, table: Path) -> tuple[str, str] | None:
    """``(mount point, file system type)`` of the mount holding ``path`` (its nearest existing folder, symlinks
    resolved): the longest mount point that is a prefix of it in ``table``. ``None`` when the table is unreadable
    (not Linux): the guard then stays out of the way."""
    try:
        lines = table.read_text(errors="replace").splitlines()
    except OSError:
        return None
    target = Path(path).absolute()
    while not target.exists() and target.parent != target:
        target = target.parent
    resolved = str(target.resolve())
    best: tuple[str, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point, fstype = _unescape(fields[1]), fields[2]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best[0])):  # a later mount over the same point wins
            best = (point, fstype)
    return best


def network_fs(path: Path, table: Path) -> tuple[str, str] | None:
    """``(mount point, type)`` when ``path`` is on a network file system (see :data:`NETWORK_FS`), else ``None``."""
    found = mount_of(path, table)
    if found is None:
        return None
    fstype = found[1].lower()
    return found if fstype in NETWORK_FS or fstype.split(".")[0] in {"nfs", "cifs", "smb"} else None


def refuse_network_fs(path: Path, table: Path | str, remedy: str) -> None:
    """Raise :class:`NetworkFileSystem` when the SQLite file ``path`` would live on a network file system."""
    found = network_fs(path, Path(table))
    if found is not None:
        point, fstype = found
        raise NetworkFileSystem(
            f"the SQLite index {path} is on a network file system ({fstype} mounted at {point}): SQLite's WAL mode "
            f"does not work over a network file system and its locks are unreliable there "
            f"(https://www.sqlite.org/wal.html); {remedy}"
        )

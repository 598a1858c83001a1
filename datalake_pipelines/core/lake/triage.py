"""What a lake does with a pending batch it cannot claim as it is: one rule for every backend.

A batch whose ``_metadata.json`` is missing or not valid JSON may still be on its way (``cp``, ``rsync`` and
``aws s3 sync`` write files in any order): it waits in ``pending/``, with a warning each claiming round, until it
has not changed for ``grace_seconds`` (``DATALAKE_GRACE_SECONDS``), then goes to ``failed/`` with the reason. The
time counts from the batch's last change as the storage records it (a local file's mtime or ctime, whichever is
later, so copies that keep old mtimes count from the copy; an S3 object's ``LastModified``), so the rule holds
the same for the sensor and for ``datalake process start``, which keeps no state between calls. A manifest that
is valid JSON but invalid (unknown provider, a bad name, disallowed meta) is final: waiting will not fix it.
"""

from __future__ import annotations

import json
from typing import Any


def readable_json(data: bytes | None) -> bool:
    """Whether a manifest's bytes are valid JSON (then a problem with it is final, not a copy in progress)."""
    if data is None:
        return False
    try:
        json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return True


def unusable_reason(
    job_id: str, problem: str, final: bool, idle_seconds: float, grace_seconds: float, log: Any
) -> str | None:
    """The reason to send an unusable pending batch to ``failed/`` with, or None while it may still be completed
    (logged as waiting). ``idle_seconds`` is how long ago the batch last changed; ``final`` is True for a
    readable but invalid manifest."""
    if final:
        return problem
    if idle_seconds < grace_seconds:
        log.warning(f"pending batch {job_id} is not usable yet ({problem}); waiting")
        return None
    return f"{problem} (gave up after {grace_seconds:.0f} s without a change)"

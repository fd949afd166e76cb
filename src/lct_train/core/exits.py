"""How every ``lct-*`` tool ends (README "Exit codes"), and the line torchrun shows for a rank.

Exit codes, the same for every tool:

- ``OK`` (0): done;
- ``VERDICT_NO`` (1): a check ran and its answer is no (``lct-estimate``: does not fit,
  ``lct-shards verify``: bad samples, ``lct-convert verify``: outputs differ). Python's own exit
  status for an uncaught exception is 1 too, but that comes with a traceback: a bug to report;
- ``REFUSED`` (2): bad input or environment (a config key, a path, permissions, a full disk, bad
  data, a damaged checkpoint), said in one line that names the culprit.

Under torchrun a stopping rank writes its line to ``TORCHELASTIC_ERROR_FILE``: torchrun's closing
report then shows that line as the root cause instead of "To enable traceback see ...". A rank
that stops only because another one did (its collective lost the peer) records a later
timestamp, so the rank that hit the fault stays the root cause.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

OK = 0
VERDICT_NO = 1
REFUSED = 2

# What a gloo collective raises when a peer process is gone (NCCL aborts instead).
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_lost(err: BaseException) -> bool:
    """True for the error a collective raises because another rank has stopped."""
    import torch.distributed as dist

    if isinstance(err, dist.DistNetworkError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _PEER_LOST)


def refuse(line: str, *, say: bool = True, after_peer: bool = False) -> int:
    """Prints ``line`` to stderr (unless ``say`` is false: a line every rank would print
    alike is said by rank 0 only), records it for torchrun and returns ``REFUSED``."""
    if say:
        print(line, file=sys.stderr, flush=True)
    record_for_torchrun(line, after_peer=after_peer)
    return REFUSED


def refuse_fault(prefix: str, err: Exception) -> int:
    """One line for a fault outside the code: the environment (an ``OSError``: permissions, a
    full disk, a vanished path) or a peer rank that stopped. Anything else is a bug and is
    raised again with its traceback."""
    if isinstance(err, OSError):
        return refuse(f"{prefix}: {err}")
    if peer_lost(err):
        return refuse(f"{prefix}: stopped: another rank stopped first (its line above says why)",
                      after_peer=True)
    raise err


def record_for_torchrun(line: str, *, after_peer: bool = False) -> None:
    """Under torchrun, this worker's error file (elsewhere nothing)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    stamp = int(time.time()) + (1 if after_peer else 0)
    data = {"message": {"message": line,
                        "extraInfo": {"py_callstack": line, "timestamp": str(stamp)}}}
    with contextlib.suppress(OSError), open(path, "w") as f:
        json.dump(data, f)

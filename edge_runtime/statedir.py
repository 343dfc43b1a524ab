"""Where edge-detect keeps what must survive a restart (the MQTT spool, watched folders' records).

systemd's ``$STATE_DIRECTORY`` (the unit's ``StateDirectory=``: writable under its
``ProtectHome``/``ProtectSystem``), else ``$XDG_STATE_HOME/edge-detect``, else
``~/.local/state/edge-detect``.
"""

from __future__ import annotations

import os
from pathlib import Path


class NoStateDir(ValueError):
    """Neither systemd nor the environment says where state may be kept (one line)."""


def state_dir() -> Path:
    """The state folder (not created here); :class:`NoStateDir` when there is no home."""
    systemd = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0]
    if systemd:
        return Path(systemd)
    state = os.environ.get("XDG_STATE_HOME")
    if not state:
        try:
            state = str(Path.home() / ".local" / "state")
        except RuntimeError:  # no HOME and no passwd entry
            raise NoStateDir("no folder for edge-detect's state: HOME is not set and neither "
                             "STATE_DIRECTORY nor XDG_STATE_HOME is") from None
    return Path(state) / "edge-detect"

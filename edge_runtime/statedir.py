"""Where edge-detect keeps what must survive a restart (the MQTT spool, watched folders' records).

systemd's ``$STATE_DIRECTORY`` (the unit's ``StateDirectory=``: writable under its
``ProtectHome``/``ProtectSystem``), else ``$XDG_STATE_HOME/edge-detect``, else
``~/.local/state/edge-detect``.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The state folder (not created here)."""
    systemd = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0]
    if systemd:
        return Path(systemd)
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "edge-detect"

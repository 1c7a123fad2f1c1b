"""Where the first start's admin token goes: a terminal, or a file only its owner can read.

A token printed to a stdout that is not a terminal lands in whatever captures it (a container's
log, systemd's journal), where it is kept and shipped. So it is printed only on a terminal;
otherwise it is written to `<data dir>/admin-token` (mode 0600) and only that path is logged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import structlog

logger = structlog.get_logger(__name__)

TOKEN_FILE = "admin-token"


def show_admin_token(secret: str, data_dir: str | Path, stream: TextIO | None = None) -> Path | None:
    """Print the token on a terminal; else write it to a file of the owner's. The file's path, if any."""
    stream = stream or sys.stdout
    if stream.isatty():
        stream.write(
            "\nBotArmy admin token (shown once; `botarmy token create --name NAME --role admin` makes another):\n"
            f"{secret}\n\n"
        )
        stream.flush()
        return None
    path = Path(data_dir).expanduser() / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file keeps its mode through O_CREAT
        file.write(f"{secret}\n")
    logger.warning(
        "admin_token_written",
        path=str(path),
        hint="stdout is not a terminal: the first admin token is in this file (owner-only); read it, then delete it",
    )
    return path

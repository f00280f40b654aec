"""The package store (local folders now; S3-compatible create-only puts later).

Delivery is create-once: a package is written under a temp name in the recipient's folder,
fsynced, and link()ed to its final name. If that name exists the existing package is kept and
adopted, never overwritten (rename-over is not safe on NFS; S3 maps this to If-None-Match puts).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from gateway.fsio import fsync_dir, private_dirs

INBOX = "inbox"


class PackageStore:
    """inbox/<agency>/ folders under a gateway root."""

    def __init__(self, root: Path) -> None:
        self.root = root / INBOX

    def folder(self, agency: str) -> Path:
        return private_dirs(self.root / agency)

    @contextmanager
    def create_once(self, agency: str, name: str) -> Iterator[Path]:
        """Yield a private temp path; on success publish it as `name` unless that already exists.

        Whatever happens the temp file is gone afterwards.
        """
        folder = self.folder(agency)
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        temp = Path(temp_name)
        try:
            yield temp
            with temp.open("rb") as written:
                os.fsync(written.fileno())
            with suppress(FileExistsError):  # made before a crash, or by another worker: adopt it
                os.link(temp, folder / name)
            fsync_dir(folder)
        finally:
            temp.unlink(missing_ok=True)

    def packages(self, agency: str) -> list[Path]:
        """The package payloads waiting in an agency's inbox, oldest name first."""
        folder = self.root / agency
        if not folder.is_dir():
            return []
        return sorted(
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.name.endswith((".csv.gpg", ".zip")) and p.is_file()
        )

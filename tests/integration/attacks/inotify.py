"""A minimal inotify watcher (ctypes over libc) for the race tests: an attacker who sees exactly when
the gateway, or a gpg it starts, opens and closes a file, and swaps bytes in at that instant."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import threading
import time
from pathlib import Path

IN_ACCESS = 0x001
IN_CLOSE_NOWRITE = 0x010
IN_OPEN = 0x020
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class Watch:
    """inotify on one or more files (inotify watches the inode the path names when it is added)."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.names: dict[int, str] = {}

    def add(self, path: Path, mask: int, label: str) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.names[wd] = label

    def wait(self, label: str, mask: int, timeout: float) -> bool:
        """Block until an event in `mask` arrives for the watch `label`; False on timeout or once `stop` is set."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.05))
            if not ready:
                continue
            data = os.read(self.fd, 65536)
            offset = 0
            found = False
            while offset < len(data):
                wd, event_mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                found = found or (self.names.get(wd) == label and bool(event_mask & mask))
            if found:
                return True
        return False

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

"""The daemon's companion processes: the SMTP intake and the mail relay, each a child of `iom-gateway run`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_SECONDS = 5.0  # the first pause before a companion that exited is started again
MAX_RESTART_SECONDS = 300.0  # the longest, for one that cannot start at all (a broken certificate)
HEALTHY_SECONDS = 60.0  # one that ran this long before it exited starts again after the first pause
STOP_WAIT_SECONDS = 30.0


@dataclass
class Companion:
    """The SMTP intake ([smtp.intake]) or the mail relay ([smtp.relay]) as a child of `iom-gateway run`.

    A process of its own, so nothing a message does to the parser, and no mail server that hangs,
    can touch the daemon; it dies with the daemon (PR_SET_PDEATHSIG), is stopped with it, and is
    started again, after a pause, if it ever exits: a companion that dies is an outcome for the
    messages in hand, never the daemon's. The pause doubles (5 s up to 5 minutes) while it keeps
    exiting within a minute of its start.
    """

    path: Path
    module: str = "gateway.daemon.smtp"  # or gateway.daemon.relay: the same life, another process
    what: str = "smtp intake"
    process: subprocess.Popen[bytes] | None = None
    due: float = 0.0  # when to (re)start it
    started: float = 0.0  # when the running one was started
    pause: float = RESTART_SECONDS  # before the next start: doubles while it keeps dying young

    def tend(self, wanted: bool, now: float) -> None:
        """Start it if `wanted` and not running (or stop it if not wanted); log an exit."""
        if not wanted:
            self.stop()
            return
        if self.process is not None and self.process.poll() is not None:
            if now - self.started >= HEALTHY_SECONDS:
                self.pause = RESTART_SECONDS  # it had been serving: a fresh failure
            log.error(
                "%s exited status=%s: started again in %ds (the daemon goes on delivering)",
                self.what,
                self.process.returncode,
                int(self.pause),
            )
            self.process, self.due = None, now + self.pause
            self.pause = min(self.pause * 2, MAX_RESTART_SECONDS)
        if self.process is None and now >= self.due:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--root", str(self.path), "--parent", str(os.getpid())],
                stdin=subprocess.DEVNULL,
            )
            self.started = now
            log.info("started %s pid=%d", self.what, self.process.pid)

    def stop(self) -> None:
        """Stop it (SIGTERM: it finishes the message in hand) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

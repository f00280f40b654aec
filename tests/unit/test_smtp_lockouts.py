"""The SMTP intake's lock-outs, on a clock the test moves: five failures lock a login or an address
for 15 minutes, failures older than the window do not count, and what is remembered stays bounded."""

from __future__ import annotations

from gateway.daemon.smtp import FAILURE_WINDOW_SECONDS, LOCK_SECONDS, PRUNE_ABOVE, Lockouts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_in_the_window_lock_for_the_lock_time_and_no_longer() -> None:
    clock = Clock()
    lockouts = Lockouts(clock=clock)
    for _ in range(4):
        assert lockouts.failed("officer:police-do", "client:10.0.0.1") == []
    assert not lockouts.locked("officer:police-do")
    assert lockouts.failed("officer:police-do", "client:10.0.0.1") == ["officer:police-do", "client:10.0.0.1"]
    assert lockouts.locked("officer:police-do") and lockouts.locked("client:10.0.0.1")
    assert not lockouts.locked("officer:probation-do", "client:10.0.0.2")
    clock.now += LOCK_SECONDS - 1
    assert lockouts.locked("officer:police-do")
    clock.now += 2
    assert not lockouts.locked("officer:police-do", "client:10.0.0.1")


def test_failures_older_than_the_window_do_not_count_and_a_success_forgets_them() -> None:
    clock = Clock()
    lockouts = Lockouts(clock=clock)
    for _ in range(4):
        lockouts.failed("officer:police-do")
    clock.now += FAILURE_WINDOW_SECONDS + 1
    assert lockouts.failed("officer:police-do") == []  # the four earlier ones are out of the window
    for _ in range(3):
        lockouts.failed("officer:police-do")
    lockouts.succeeded("officer:police-do")
    assert lockouts.failed("officer:police-do") == []


def test_a_guesser_trying_many_logins_does_not_grow_what_is_remembered_without_bound() -> None:
    clock = Clock()
    lockouts = Lockouts(clock=clock)
    for n in range(PRUNE_ABOVE):
        lockouts.failed(f"officer:guess-{n}")
    clock.now += FAILURE_WINDOW_SECONDS + 1
    for n in range(100):
        lockouts.failed(f"officer:later-{n}")
    assert lockouts.tracked <= 200

"""The daemon's Settler: when a file may be taken, from the events and the clock values it is given."""

from __future__ import annotations

import pytest

from gateway.core.timing import Stopwatch
from gateway.daemon.watch import Settler

CSV, SIG = "/r/outbox/police/a.csv", "/r/outbox/police/a.csv.sig"
STAT, OTHER = (7, 100, 1), (7, 200, 2)


def test_a_file_seen_without_events_is_taken_after_the_settle_time_and_never_early() -> None:
    settler = Settler(2.0)
    assert settler.ready(CSV, STAT, 10.0) == 2.0
    assert settler.ready(CSV, STAT, 11.5) == 0.5
    assert settler.ready(CSV, STAT, 12.0) == 0.0
    assert not settler.early(CSV)  # present at start-up or polled: no close was seen


def test_a_change_starts_the_settle_time_again() -> None:
    settler = Settler(2.0)
    settler.ready(CSV, STAT, 10.0)
    assert settler.ready(CSV, OTHER, 11.0) == 2.0
    assert settler.ready(CSV, OTHER, 12.5) == 0.5


def test_a_file_being_written_waits_however_long_it_stays_unchanged() -> None:
    settler = Settler(2.0)
    settler.writing(CSV, 10.0)
    assert settler.ready(CSV, STAT, 10.0) == 2.0
    assert settler.ready(CSV, STAT, 100.0) == 2.0
    assert not settler.early(CSV)
    settler.closed(CSV, 100.0)
    assert settler.ready(CSV, STAT, 101.0) == 1.0


def test_a_pair_closed_since_its_last_write_may_be_taken_early_once() -> None:
    settler = Settler(20.0)
    settler.closed(SIG, 10.0)  # renamed in
    settler.writing(CSV, 10.1)
    settler.closed(CSV, 10.2)
    assert settler.ready(SIG, STAT, 10.3) > 0 and settler.ready(CSV, STAT, 10.3) > 0
    assert settler.early(CSV, SIG)
    # the early take did not prove it (a half-written file): the same bytes wait to settle
    assert not settler.early(CSV, SIG)
    assert settler.ready(CSV, STAT, 12.0) == pytest.approx(18.2)


def test_a_write_after_the_close_takes_the_early_chance_away_until_the_next_close() -> None:
    settler = Settler(20.0)
    settler.closed(SIG, 10.0)
    settler.closed(CSV, 10.1)
    settler.writing(CSV, 10.2)  # reopened and appended to
    assert not settler.early(CSV, SIG)
    settler.closed(CSV, 11.0)
    assert settler.early(CSV, SIG)


def test_the_rest_of_a_half_written_file_closed_again_is_offered_early_again() -> None:
    settler = Settler(20.0)
    settler.closed(SIG, 10.0)
    settler.closed(CSV, 10.1)
    assert settler.early(CSV, SIG)  # tried: its signature did not verify yet
    settler.writing(CSV, 11.0)
    settler.closed(CSV, 11.5)  # the rest appended: only the CSV is new, that is enough
    assert settler.early(CSV, SIG)
    assert not settler.early(CSV, SIG)


def test_both_files_must_have_been_seen_closed() -> None:
    settler = Settler(20.0)
    settler.closed(CSV, 10.0)
    assert settler.ready(SIG, STAT, 10.0) == 20.0  # the signature was there before: no close seen
    assert not settler.early(CSV, SIG)
    assert settler.early(CSV)


def test_the_first_sighting_of_a_pair_is_when_its_last_file_was_first_seen() -> None:
    settler = Settler(2.0)
    assert settler.first(CSV, SIG) is None
    settler.closed(SIG, 10.0)
    settler.writing(CSV, 10.5)
    settler.closed(CSV, 11.0)
    settler.ready(CSV, STAT, 12.0)  # a change seen later does not move it
    assert settler.first(CSV, SIG) == 10.5
    assert settler.first(SIG) == 10.0


def test_a_file_no_scan_found_twice_is_forgotten_and_a_new_file_of_that_name_starts_afresh() -> None:
    settler = Settler(2.0)
    settler.closed(CSV, 10.0)
    settler.closed(SIG, 10.0)
    settler.forget("/r/outbox/police/", {SIG})
    assert settler.first(CSV) == 10.0  # it may have arrived after that scan began
    settler.forget("/r/outbox/police/", {SIG})
    assert settler.first(CSV) is None and settler.first(SIG) == 10.0
    assert settler.ready(CSV, STAT, 20.0) == 2.0
    assert not settler.early(CSV)


def test_a_pair_that_arrives_during_a_pass_keeps_its_closes_for_the_next() -> None:
    settler = Settler(20.0)
    settler.closed(SIG, 10.0)  # events while the pass works on the files its scan found
    settler.closed(CSV, 10.0)
    settler.forget("/r/outbox/police/", set())
    settler.ready(CSV, STAT, 10.5)  # the next pass's scan finds them
    settler.ready(SIG, STAT, 10.5)
    settler.forget("/r/outbox/police/", {CSV, SIG})
    assert settler.early(CSV, SIG)


def test_a_file_removed_or_renamed_away_is_forgotten_at_once() -> None:
    settler = Settler(20.0)
    settler.closed(CSV, 10.0)
    settler.gone(CSV)
    assert settler.first(CSV) is None
    settler.writing(CSV, 11.0)  # a new file of that name
    assert not settler.early(CSV)


def test_the_stopwatch_charges_each_lap_to_its_stage_in_milliseconds() -> None:
    watch = Stopwatch(100.0, {"settle": 0.25})
    watch.lap("verify", 100.01)
    watch.lap("validate", 100.05)
    watch.lap("seal", 100.25)
    watch.lap("deliver", 100.255)
    assert watch.line() == "settle_ms=250 verify_ms=10 validate_ms=40 seal_ms=200 deliver_ms=5"
    watch.lap("refuse", 100.3)
    assert watch.line().endswith(" deliver_ms=5 refuse_ms=45")

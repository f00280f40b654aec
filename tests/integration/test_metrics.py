"""Monitoring without a port: `status --format prometheus`, and `state/metrics.prom` the daemon writes for
node_exporter's textfile collector. The numbers follow what happened (a delivery, a refusal, a file still
waiting); the format is Prometheus text exposition; no name, surname or value is ever in it. And the
daemon's own word on timeliness: one warning per late agency and month."""

from __future__ import annotations

import re
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.daemon_harness import GOOD, INVALID, Daemon, cli, cli_output, drop, wait_until

SAMPLE = re.compile(r'iom_gateway_[a-z0-9_]+(\{agency="[a-z0-9-]+"\})? -?[0-9]+(\.[0-9]+)?')
SURNAMES = ["Ashcroft", "O'Connell", "Smith-Jones", "Chaudhry", "Adeyemi", "Whitfield", "Mistry", "Byrne"]


def parsed(text: str) -> dict[str, float]:
    """Each sample by its name and labels; every line a HELP, a TYPE or a well-formed sample."""
    samples, described = {}, set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            described.add((line[2:6], line.split()[2]))
            continue
        assert SAMPLE.fullmatch(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
        assert ("HELP", name.split("{")[0]) in described and ("TYPE", name.split("{")[0]) in described
    return samples


def test_status_prometheus_counts_deliveries_refusals_and_what_waits_and_names_no_file_or_person(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0
    drop(root, "police", INVALID, "police-bad-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 1
    drop(root, "police", GOOD, "police-Ashcroft-2026-11.csv", None)  # unsigned: it waits for its signature
    code, text = cli_output(root, capsys, "status", "--format", "prometheus")
    metrics = parsed(text)
    for recipient in ("probation", "housing"):
        assert metrics[f'iom_gateway_deliveries_24h{{agency="{recipient}"}}'] == 1
        assert metrics[f'iom_gateway_inbox_unpulled{{agency="{recipient}"}}'] == 1
    assert metrics['iom_gateway_deliveries_24h{agency="police"}'] == 0
    assert metrics['iom_gateway_refusals_24h{agency="police"}'] == 1
    assert metrics['iom_gateway_outbox_files{agency="police"}'] == 1
    assert metrics["iom_gateway_oldest_waiting_seconds"] >= 0
    assert metrics["iom_gateway_in_flight"] == 0 and metrics["iom_gateway_mail_queued"] == 0
    assert metrics["iom_gateway_key_expiry_days"] > 300  # demo keys last two years
    assert metrics["iom_gateway_last_heartbeat_timestamp_seconds"] <= metrics["iom_gateway_generated_timestamp_seconds"]
    for surname in SURNAMES:
        assert surname not in text
    assert "police-bad" not in text and ".csv" not in text
    # the exit status is status's own: 1 while an attention line stands, else 0
    attention, report = cli_output(root, capsys, "status", "--json")
    assert code == attention
    assert ('"attention": []' in report) == (code == 0)


def test_the_daemon_writes_the_metrics_file_atomically_for_node_exporter(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = routed_root / "state" / "metrics.prom"
    daemon = Daemon(routed_root).ready()
    try:
        wait_until(path.exists, 30, "state/metrics.prom")
        metrics = parsed(path.read_text())
        assert 'iom_gateway_outbox_files{agency="police"}' in metrics
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # state/ is the gateway's alone (the access model)
        assert cli(routed_root, "access", "check") in (0, 1)
        assert "metrics.prom" not in capsys.readouterr().out
        assert not list(path.parent.glob(".*.tmp"))  # written by temp file and rename
    finally:
        assert daemon.stop() == 0, daemon.text()


def test_the_daemon_warns_once_a_month_of_each_agency_late_past_the_due_day(routed_root: Path) -> None:
    toml = routed_root / "gateway.toml"
    toml.write_text(re.sub(r"(?m)^due_day = [0-9]+", "due_day = 1", toml.read_text()))
    today = datetime.now(UTC)
    drop(routed_root, "police", GOOD, f"police-{today:%Y-%m}.csv", "police-do")
    assert cli(routed_root, "run", "--once") == 0  # police has delivered for this month: not late
    daemon = Daemon(routed_root).ready()
    try:
        if today.day > 1:
            daemon.wait_log("late agency=yos", 60)
        time.sleep(5)  # past two more rescans (2 s each): a warning said again would be there by now
    finally:
        assert daemon.stop() == 0, daemon.text()
    warned = re.findall(r"late agency=([a-z]+) period=([0-9-]+)", daemon.text())
    agencies = ["council", "housing", "probation", "treatment", "yos"]
    # on the 1st nobody is late yet (due day 1); on any later day each agency but police, once
    assert warned == ([] if today.day == 1 else [(a, f"{today:%Y-%m}") for a in agencies])

"""Each limit in gateway.toml stops a file with a clear error instead of exhausting the gateway."""

from __future__ import annotations

from pathlib import Path

from gateway.core.model import Period
from gateway.exchange.process import check_file
from gateway.state.root import Root
from gateway.validate import Report, mask
from gateway.validate.report import column_letter
from gateway.validate.schema import load_standard
from tests.conftest import REPO, TODAY, csv_bytes, make_root

HEADER = ["forename", "surname", "gender", "date_of_birth", "criminal_history"]
ROW = ["Ann", "Lee", "F", "01/01/1990", "notes"]


def _validate(tmp_path: Path, limits: str, data: bytes) -> Report:
    root = make_root(tmp_path / "root", toml_extra="")
    text = (root / "gateway.toml").read_text(encoding="utf-8")
    start = text.index("[limits]")
    end = text.index("[policy]")
    (root / "gateway.toml").write_text(text[:start] + "[limits]\n" + limits + "\n\n" + text[end:], encoding="utf-8")
    path = tmp_path / "file.csv"
    path.write_bytes(data)
    return check_file(Root.open(root), path, "police", Period(2026, 10), TODAY)


def test_file_size_limit(tmp_path: Path) -> None:
    data = csv_bytes([HEADER, ROW])
    report = _validate(tmp_path, f"max_file_bytes = {len(data) - 1}", data)
    assert [i.rule for i in report.issues] == ["file-too-large"]
    assert f"{len(data):,} bytes" in report.issues[0].message
    assert _validate(tmp_path / "ok", f"max_file_bytes = {len(data)}", data).valid


def test_row_limit(tmp_path: Path) -> None:
    report = _validate(tmp_path, "max_rows = 3", csv_bytes([HEADER, ROW, ROW, ROW, ROW]))
    assert report.counts == {"too-many-rows": 1} and report.rows == 3
    assert _validate(tmp_path / "ok", "max_rows = 3", csv_bytes([HEADER, ROW, ROW, ROW])).valid


def test_cell_limit_stops_reading_at_the_row(tmp_path: Path) -> None:
    big = [*ROW[:4], "x" * 600]
    report = _validate(tmp_path, "max_cell_chars = 500", csv_bytes([HEADER, ROW, big, ROW]))
    assert [(i.row, i.rule) for i in report.issues] == [(3, "cell-too-long")]


def test_line_limit_never_holds_a_longer_line(tmp_path: Path) -> None:
    rows = [HEADER, ROW, [*ROW[:4], "two\nlines"], [*ROW[:4], "y" * 300], ROW]
    report = _validate(tmp_path, "max_line_bytes = 100", csv_bytes(rows))
    assert [(i.row, i.rule) for i in report.issues] == [(None, "line-too-long")]
    assert report.issues[0].message.startswith("line 5 of the file is over 100 bytes")


def test_line_limit_across_reads(tmp_path: Path) -> None:
    # a line longer than one read of the byte guard (64 KiB) but under the cap is fine; over it is not
    long_row = [*ROW[:4], "z" * 70_000]
    assert _validate(
        tmp_path, "max_line_bytes = 80000\nmax_cell_chars = 80000", csv_bytes([HEADER, long_row])
    ).counts == {"max-length": 1}
    report = _validate(tmp_path / "b", "max_line_bytes = 69000", csv_bytes([HEADER, ROW, long_row]))
    assert report.issues[0].message.startswith("line 3 of the file")


def test_reported_errors_are_capped_but_all_counted(tmp_path: Path) -> None:
    rows = [HEADER] + [["Ann", "Lee", "X", "01/01/1990", ""]] * 30
    report = _validate(tmp_path, "max_reported_errors = 5", csv_bytes(rows))
    assert len(report.issues) == 5 and report.counts == {"gender-value": 30} and report.omitted == 25
    assert "25 more error(s)" in report.to_text()


def test_mask_keeps_only_the_shape() -> None:
    assert mask("BH1 1AA") == "AA9 9AA"
    assert mask("Siobhán O'Brien") == "Aaaaaaa A'Aaaaa"
    assert mask("=cmd|' /C calc'!A0") == "=aaa|' /A aaaa'!A9"
    assert mask("a\tb\nc\x07") == "a\\ta\\na\\x07"
    long = mask("z" * 10_000)
    assert long.startswith("a" * 40) and long.endswith("(10,000 characters)") and len(long) < 80


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 27, 701, 702)] == ["A", "Z", "AA", "AB", "ZZ", "AAA"]


CAP = 112  # four times Table 1's 28 columns


def test_the_column_cap_is_four_times_the_standard() -> None:
    standard = load_standard(REPO)
    assert len(standard.columns) == 28 and standard.max_header_cells == CAP


def test_a_header_at_the_column_cap_is_matched_cell_by_cell(tmp_path: Path) -> None:
    header = [*HEADER, *[f"extra {i}" for i in range(CAP - len(HEADER))]]
    report = _validate(tmp_path, "", csv_bytes([header, [*ROW, *[""] * (CAP - len(ROW))]]))
    assert report.counts == {"unknown-column": CAP - len(HEADER)}


def test_a_header_over_the_column_cap_stops_with_one_error(tmp_path: Path) -> None:
    header = [*HEADER, *[f"extra {i}" for i in range(CAP + 1 - len(HEADER))]]
    report = _validate(
        tmp_path, "", csv_bytes([header, ["Ann", "Lee", "X", "01/01/1990", *[""] * (CAP + 1 - len(ROW))]])
    )
    assert [(i.row, i.column, i.rule) for i in report.issues] == [(1, None, "too-many-columns")]
    assert report.counts == {"too-many-columns": 1} and report.rows == 0 and report.columns == []
    assert f"{CAP + 1:,} cells" in report.issues[0].message and f"at most {CAP}" in report.issues[0].message


def test_a_record_over_the_line_cap_across_quoted_line_breaks_stops_reading(tmp_path: Path) -> None:
    # Each physical line is under max_line_bytes; the record they make is not: csv.reader would
    # otherwise hold all of it (and as many cells as it has commas) at once.
    spread = "\n".join(["a" * 30] * 4)
    data = csv_bytes([HEADER, ROW]) + f'Ann,Lee,F,01/01/1990,"{spread}"\r\n'.encode() + csv_bytes([ROW])
    report = _validate(tmp_path, "max_line_bytes = 100", data)
    assert [(i.row, i.rule) for i in report.issues] == [(3, "line-too-long")]
    assert report.issues[0].message.startswith("runs over 100 characters across quoted line breaks")
    assert report.rows == 1  # the rows read whole before reading stopped


def test_a_header_over_the_line_cap_across_quoted_line_breaks_stops_reading(tmp_path: Path) -> None:
    spread = '"\n"'.join(["," * 60] * 3)
    report = _validate(tmp_path, "max_line_bytes = 100", f"forename,{spread}\r\n".encode() + csv_bytes([ROW]))
    assert [(i.row, i.rule) for i in report.issues] == [(1, "line-too-long")]
    assert report.issues[0].message.startswith("runs over 100 characters") and "header" in report.issues[0].message
    assert report.rows == 0


def test_a_long_multi_line_record_under_the_cap_is_read(tmp_path: Path) -> None:
    notes = "\n".join(["line of notes"] * 6)  # 83 characters over 6 lines; the record is 106
    report = _validate(tmp_path, "max_line_bytes = 120", csv_bytes([HEADER, [*ROW[:4], notes], [*ROW[:4], notes]]))
    assert report.valid and report.rows == 2

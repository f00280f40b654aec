"""Benchmark `iom-gateway validate` against `frictionless validate`.

Generates a deterministic, realistic IOM Table 1 CSV (police columns, 1% of
rows broken in one known way each), writes a Frictionless Table Schema that
expresses the same rules as far as Table Schema can, then times both tools as
whole processes (wall clock, median of --repeat runs, peak RSS via wait4).

    .venv/bin/python bench/validate.py [--rows 100000] [--repeat 3]
        [--seed 20261121] [--keep DIR] [--markdown] [--self-check]
        [--stream-check]

See bench/README.md for what is and is not comparable.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PERIOD = "2026-10"
AGENCY = "police"

COLUMNS: tuple[str, ...] = (
    "title",
    "forename",
    "surname",
    "address_street",
    "address_locality",
    "post_town",
    "postcode",
    "gender",
    "ethnicity",
    "date_of_birth",
    "cro_number",
    "om_name",
    "om_organisation",
    "criminal_history",
    "associates",
    "family_details",
    "victims_details",
    "current_intelligence",
    "drug_test_results",
    "risk_assessment",
    "engagement",
    "case_management",
    "victim_consent",
)
FREE_TEXT: tuple[str, ...] = (
    "criminal_history",
    "associates",
    "family_details",
    "victims_details",
    "current_intelligence",
    "drug_test_results",
    "risk_assessment",
    "engagement",
    "case_management",
)
ONE_LINE: tuple[str, ...] = (
    "address_street",
    "address_locality",
    "post_town",
    "om_name",
    "om_organisation",
)
REQUIRED: tuple[str, ...] = ("forename", "surname", "gender", "date_of_birth")

# ---------------------------------------------------------------- rules
POSTCODE_RX = (
    r"(?:GIR0AA|BFPO[0-9]{1,4}|ZZ99[0-9][A-Z]{2}|[A-PR-UWYZ](?:[0-9]{1,2}"
    r"|[A-HK-Y][0-9]{1,2}|[0-9][A-HJKPS-UW]|[A-HK-Y][0-9][ABEHMNPRV-Y])"
    r"[0-9][ABD-HJLNP-UW-Z]{2})"
)
CRO_RX = r"(?:[0-9]{1,6}/[0-9]{2}[A-HJ-NP-RT-Z]|SF[0-9]{2}/[0-9]{1,6}[A-HJ-NP-RT-Z])"
NAME_RX = r"(?:[^\W\d_](?:[^\W\d_]|[\u0300-\u036f' .-]){0,49})"
TITLE_RX = r"(?:[^\W\d_](?:[^\W\d_]|[ .'-]){0,19})"
DOB_RX = r"[0-9]{2}/[0-9]{2}/[0-9]{4}"
_CTRL_FREE = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
_CTRL_LINE = r"\u0000-\u001f\u007f-\u009f"
# No forbidden control character, and no leading = + - @ tab CR (formula injection).
FREE_TEXT_RX = rf"(?:[^=+\-@\t\r{_CTRL_FREE}][^{_CTRL_FREE}]*)?"
ONE_LINE_RX = rf"(?:[^=+\-@{_CTRL_LINE}][^{_CTRL_LINE}]*)?"
CRO_ALPHABET = "ZABCDEFGHJKLMNPQRTUVWXY"
ETHNICITY_CODES: tuple[str, ...] = (
    "W1",
    "W2",
    "W9",
    "M1",
    "M2",
    "M3",
    "M9",
    "A1",
    "A2",
    "A3",
    "A9",
    "B1",
    "B2",
    "B9",
    "O1",
    "O9",
    "NS",
)
ETHNICITY_LABELS: tuple[str, ...] = (
    "White - British",
    "White - Irish",
    "White - Any other White background",
    "Mixed - White and Black Caribbean",
    "Mixed - White and Black African",
    "Mixed - White and Asian",
    "Mixed - Any other Mixed background",
    "Asian or Asian British - Indian",
    "Asian or Asian British - Pakistani",
    "Asian or Asian British - Bangladeshi",
    "Asian or Asian British - Any other Asian background",
    "Black or Black British - Caribbean",
    "Black or Black British - African",
    "Black or Black British - Any other Black background",
    "Chinese or other ethnic group - Chinese",
    "Chinese or other ethnic group - Any other ethnic group",
    "Not stated",
)
# Born in this window => aged 18..70 on every day of 2026-10 (generator).
DOB_FIRST, DOB_LAST = dt.date(1957, 1, 1), dt.date(2007, 12, 31)
# Looser Table Schema bounds approximating "aged 18-70 in 2026-10".
DOB_MIN_TS, DOB_MAX_TS = "01/11/1955", "01/10/2008"

# ---------------------------------------------------------------- pools
TITLES = {"M": ("Mr",) * 12 + ("Dr", "Mx"), "F": ("Mrs", "Ms", "Miss") * 4 + ("Dr", "Mx")}
FORENAMES = {
    "M": (
        "James",
        "Jack",
        "Oliver",
        "Daniel",
        "Thomas",
        "Liam",
        "Connor",
        "Ryan",
        "Kyle",
        "Jordan",
        "Lee",
        "Dean",
        "Wayne",
        "Craig",
        "Paul",
        "Mark",
        "Seán",
        "Ciarán",
        "Pádraig",
        "Eoin",
        "Declan",
        "Mohammed",
        "Imran",
        "Asif",
        "Bilal",
        "Zain",
        "Amir",
        "Harpreet",
        "Gurpreet",
        "Rajesh",
        "Sanjay",
        "Łukasz",
        "Wojciech",
        "Grzegorz",
        "Paweł",
        "Michał",
        "Jean-Paul",
        "D'Andre",
    ),
    "F": (
        "Sarah",
        "Emma",
        "Chloe",
        "Jade",
        "Kelly",
        "Leanne",
        "Stacey",
        "Amy",
        "Zoë",
        "Zoe\u0308",
        "Siobhán",
        "Aoife",
        "Niamh",
        "Róisín",
        "Aisha",
        "Fatima",
        "Nadia",
        "Priya",
        "Sana",
        "Ayesha",
        "Shazia",
        "Kaur",
        "Małgorzata",
        "Zofia",
        "Agnieszka",
        "Katarzyna",
        "Mary-Jane",
        "Renée",
    ),
}
SURNAMES = (
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Walker",
    "Wright",
    "Hughes",
    "Smith-Jones",
    "Lloyd-Davies",
    "O'Brien",
    "O'Connor",
    "McDonagh",
    "Murphy",
    "Ó Súilleabháin",
    "Kelly",
    "Byrne",
    "Khan",
    "Hussain",
    "Ahmed",
    "Begum",
    "Patel",
    "Singh",
    "Akhtar",
    "Iqbal",
    "Chaudhry",
    "Mahmood",
    "Rahman",
    "Uddin",
    "Nowak",
    "Kowalski",
    "Wiśniewski",
    "Wójcik",
    "Kowalczyk",
    "Zieliński",
    "St. John",
    "de Souza",
)
STREETS = (
    "Chapel Hill",
    "Station Road",
    "Church Lane",
    "Coventry Road",
    "Stratford Road",
    "Warwick Road",
    "Lode Lane",
    "Hobs Moat Road",
    "Bosworth Drive",
    "Chelmsley Road",
    "Craig Croft",
    "Moorend Avenue",
    "Alcester Street",
    "Ladypool Road",
    "Soho Road",
    "Foleshill Road",
    "Stoney Stanton Road",
    "Bloxwich Road",
    "Hagley Road",
    "Green Lane",
    "Victoria Road",
    "Queen's Road",
    "St. Mary's Close",
    "The Crescent",
)
# town, localities, outward codes, force
AREAS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        "Solihull",
        ("Shirley", "Olton", "Elmdon", "Knowle", "Dorridge", ""),
        ("B90", "B91", "B92", "B93", "B94"),
        "West Midlands Police",
    ),
    (
        "Birmingham",
        ("Chelmsley Wood", "Kingshurst", "Castle Bromwich", "Small Heath", "Sparkhill", "Erdington", "Digbeth", ""),
        ("B1", "B5", "B9", "B10", "B11", "B12", "B23", "B36", "B37", "B44"),
        "West Midlands Police",
    ),
    (
        "Coventry",
        ("Foleshill", "Hillfields", "Tile Hill", "Canley", ""),
        ("CV1", "CV2", "CV3", "CV4", "CV6"),
        "West Midlands Police",
    ),
    ("Walsall", ("Bloxwich", "Caldmore", "Palfrey", ""), ("WS1", "WS2", "WS3"), "West Midlands Police"),
    ("Nuneaton", ("Camp Hill", "Stockingford", ""), ("CV10", "CV11"), "Warwickshire Police"),
    ("Tamworth", ("Glascote", "Wilnecote", ""), ("B77", "B78", "B79"), "Staffordshire Police"),
    (
        "London",
        ("Westminster", "Soho", "Clerkenwell", ""),
        ("SW1A", "W1D", "EC1A", "N1C", "E1W"),
        "Metropolitan Police Service",
    ),
    ("Bournemouth", ("Kinson", "Boscombe", ""), ("BH1", "BH7", "BH11"), "Dorset Police"),
)
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
PLACES = (
    "Chelmsley Wood shopping centre",
    "Solihull town centre",
    "the Touchwood car park",
    "Birmingham Airport",
    "Digbeth coach station",
    "Coventry city centre",
    "Kingshurst Parade",
    "the Bull Ring",
    "Shirley Park",
    "Marston Green station",
)
SERVICES = (
    "Change Grow Live",
    "DIP",
    "the Job Centre",
    "St Basils",
    "Solihull Integrated Addiction Services",
    "the Probation Service",
    "Recovery Near You",
    "Solihull Council housing options",
)
DRUGS = ("opiates", "cocaine", "cannabis", "benzodiazepines", "amphetamine", "spice")
OFFENCES = (
    "burglary (dwelling)",
    "theft from a motor vehicle",
    "shoplifting",
    "robbery",
    "possession with intent to supply (class A)",
    "common assault",
    "assault occasioning ABH",
    "criminal damage",
    "breach of a CBO",
    "handling stolen goods",
    "aggravated vehicle taking",
)
TEMPLATES: dict[str, tuple[str, ...]] = {
    "criminal_history": (
        "Convicted of {offence} at {town} Crown Court in {year}; sentenced to {n} months.",
        "{n} previous convictions, mostly acquisitive: {offence}, {offence2}.",
        "Arrested {date} for {offence}, released under investigation.",
        "Cautioned for {offence} in {year}, no further action on {offence2}.",
        "Recalled to HMP Birmingham on {date} after failing to reside.",
    ),
    "associates": (
        "Known associate of {name}, also an IOM nominal.",
        "Seen with {name} and {name2} at {place} on {date}.",
        'Linked to the "{gang}" group operating around {place}.',
        "Co-accused with {name} in {year} ({offence}).",
    ),
    "family_details": (
        "Lives with partner {fname} and {n} children, aged {a} and {b}.",
        'Mother, {name}, is main support; relationship described as "strained".',
        "Children's social care involved since {year}, child protection plan in place.",
        "No contact with father. Brother {mname} in custody.",
    ),
    "victims_details": (
        "Victim {name} (ex-partner) consented to details being shared; lives in {town}.",
        "Victim, {fname}, aged {a}, has asked for updates through the VLO.",
        "Victim of {offence} on {date}: {name}, {street}.",
    ),
    "current_intelligence": (
        "Intelligence suggests dealing cannabis from an address on {street}.",
        "Reported to be using a grey Ford Focus, partial VRM {vrm}.",
        "Information received {date}: frequenting {place} late evenings.",
        'Possible county lines involvement, "{gang}" line, graded B2.',
    ),
    "drug_test_results": (
        "Tested positive for {drug} and {drug2} on {date}.",
        "Negative test on {date}, first negative since {year}.",
        "Refused test on arrest, {date}.",
        "Positive for {drug} on arrest {date}; required assessment attended.",
    ),
    "risk_assessment": (
        "OASys: ROSH high to known adult, medium to public.",
        "RSR score {a}.{n}%, OGRS3 {b}%.",
        "MAPPA level {lvl}, category {cat}.",
        "Risk to children: medium. Domestic abuse marker, DASH {dash}.",
    ),
    "engagement": (
        "Attended appointment with {service} on {date}, engaged well.",
        "Missed {n} appointments in {year}; warning letter issued.",
        'Engaging with {service} keyworker, {fname}, says things are "going OK".',
        "Did not attend on {date}, phoned later, rebooked.",
    ),
    "case_management": (
        "Case reviewed at IOM panel {date}; remains RED.",
        "Actions: home visit by {date}, referral to {service}, ETE referral.",
        "Lead: {name}. Next review {date}.",
        "Moved from amber to green cohort, {date}, following {n} months' compliance.",
    ),
}
GANGS = ("Burger Bar", "Johnson", "YGC", "B9 Boys", "Tile Hill Crew", "Moor End")
JOINERS = (" ",) * 16 + ("\r\n", "\n", "\r\n\r\n", "; ")
OM_ORGS = ("West Midlands Police",) * 6 + (
    "Warwickshire Police",
    "Staffordshire Police",
    "West Midlands Police IOM Unit",
)

DEFECTS: tuple[str, ...] = (
    "postcode",
    "cro-check",
    "date-31-02",
    "gender-male",
    "formula",
    "ethnicity",
)


@dataclass
class Manifest:
    """What the generator wrote: row count and the deliberately broken rows."""

    rows: int
    invalid: dict[int, tuple[str, str]] = field(default_factory=dict)  # 0-based data row -> (defect, column)

    def counts(self) -> Counter[str]:
        """Number of broken rows per defect kind."""
        return Counter(kind for kind, _ in self.invalid.values())

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (row numbers 1-based, first data row = 1)."""
        return {
            "rows": self.rows,
            "invalid": [{"row": i + 1, "defect": k, "column": c} for i, (k, c) in sorted(self.invalid.items())],
        }


# ---------------------------------------------------------------- generator
def cro_check_letter(serial: str, yy: str) -> str:
    """CRO check character: YY + serial zero-padded to 6 digits, mod 23."""
    return CRO_ALPHABET[int(yy + serial.zfill(6)) % 23]


# How much free text a row carries. "typical" is calibrated to the reference file
# (csv.DictReader alone ~164k rows/s there; this profile: ~440 bytes a row, ~150k rows/s); "heavy" fills most of
# the nine free-text columns with up to 400 characters (about 1,070 bytes a row).
PROFILES: dict[str, tuple[float, float]] = {"typical": (0.35, 45.0), "heavy": (0.7, 110.0)}


class RowFactory:
    """Builds rows of realistic police-supplied IOM data from one seeded RNG."""

    def __init__(self, rng: random.Random, profile: str = "typical") -> None:
        """Keep the RNG and pre-expand sentence pools so rows are cheap to build."""
        self.rng = rng
        self.fill, self.mean = PROFILES[profile]
        self.days = (DOB_LAST - DOB_FIRST).days
        self.pools = {col: [self._sentence(col) for _ in range(600)] for col in FREE_TEXT}

    def _name(self) -> str:
        """A forename and surname."""
        r = self.rng
        return f"{r.choice(FORENAMES[r.choice('MF')])} {r.choice(SURNAMES)}"

    def _date(self) -> str:
        """A recent DD/MM/YYYY date."""
        d = dt.date(2019, 1, 1) + dt.timedelta(days=self.rng.randrange(2830))
        return d.strftime("%d/%m/%Y")

    def _sentence(self, col: str) -> str:
        """One filled-in case-note sentence for a free-text column."""
        r = self.rng
        return r.choice(TEMPLATES[col]).format(
            offence=r.choice(OFFENCES),
            offence2=r.choice(OFFENCES),
            town=r.choice(AREAS)[0],
            year=r.randrange(2008, 2027),
            n=r.randrange(2, 19),
            date=self._date(),
            name=self._name(),
            name2=self._name(),
            fname=r.choice(FORENAMES[r.choice("MF")]),
            mname=r.choice(FORENAMES["M"]),
            place=r.choice(PLACES),
            gang=r.choice(GANGS),
            a=r.randrange(1, 17),
            b=r.randrange(1, 17),
            street=r.choice(STREETS),
            drug=r.choice(DRUGS),
            drug2=r.choice(DRUGS),
            service=r.choice(SERVICES),
            lvl=r.randrange(1, 4),
            cat=r.randrange(1, 4),
            dash=r.choice(("standard", "medium", "high")),
            vrm=f"{r.choice('ABCDEFGHKLMNOPRSVWY')}{r.choice('ABCDEFGHJKLMNOPRSTUVWXY')}{r.randrange(10, 75)}",
        )

    def free_text(self, col: str) -> str:
        """0-400 characters of prose, sometimes multi-line, quoted or comma-laden."""
        r = self.rng
        if r.random() >= self.fill:
            return ""
        target = min(400, int(r.expovariate(1 / self.mean)) + 20)
        pool = self.pools[col]
        parts = [r.choice(pool)]
        size = len(parts[0])
        while size < target:
            nxt = r.choice(JOINERS) + r.choice(pool)
            parts.append(nxt)
            size += len(nxt)
        return "".join(parts)[:400].rstrip()

    def postcode(self, outwards: Sequence[str]) -> str:
        """A postcode without spaces; now and then ZZ99 (no fixed abode)."""
        r = self.rng
        if r.random() < 0.01:
            return f"ZZ99{r.randrange(10)}{r.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{r.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"
        return f"{r.choice(outwards)}{r.randrange(10)}{r.choice(INWARD_LETTERS)}{r.choice(INWARD_LETTERS)}"

    def cro(self, birth_year: int) -> str:
        """A valid CRO number NNNNNN/YYC (serial 1..999999) or ''."""
        r = self.rng
        if r.random() < 0.3:
            return ""
        serial = str(r.randrange(1, 1_000_000))
        yy = f"{r.randrange(max(birth_year + 12, 1975), 2027) % 100:02d}"
        return f"{serial}/{yy}{cro_check_letter(serial, yy)}"

    def row(self) -> dict[str, str]:
        """One valid row."""
        r = self.rng
        gender = r.choice("MF")
        town, localities, outwards, force = r.choice(AREAS)
        dob = DOB_FIRST + dt.timedelta(days=r.randrange(self.days + 1))
        postcode = self.postcode(outwards) if r.random() < 0.98 else ""
        nfa = postcode.startswith("ZZ99")
        flat = f"Flat {r.randrange(1, 30)}, " if r.random() < 0.1 else ""
        eth = r.random()
        consent = r.choice(("", "", "Y", "N"))
        row = {
            "title": r.choice(TITLES[gender]) if r.random() < 0.9 else "",
            "forename": r.choice(FORENAMES[gender]),
            "surname": r.choice(SURNAMES),
            "address_street": "" if nfa else f"{flat}{r.randrange(1, 250)} {r.choice(STREETS)}",
            "address_locality": "" if nfa else r.choice(localities),
            "post_town": "" if nfa else town,
            "postcode": postcode,
            "gender": gender,
            "ethnicity": (r.choice(ETHNICITY_CODES) if eth < 0.6 else r.choice(ETHNICITY_LABELS) if eth < 0.95 else ""),
            "date_of_birth": dob.strftime("%d/%m/%Y"),
            "cro_number": self.cro(dob.year),
            "om_name": self._name() if r.random() < 0.85 else "",
            "om_organisation": force if force.endswith("Police") and r.random() < 0.5 else r.choice(OM_ORGS),
            "victim_consent": consent,
        }
        for col in FREE_TEXT:
            row[col] = self.free_text(col)
        if consent != "Y":
            row["victims_details"] = ""
        elif not row["victims_details"]:
            row["victims_details"] = r.choice(self.pools["victims_details"])
        return row

    def break_row(self, row: dict[str, str], defect: str) -> str:
        """Introduce exactly one defect of kind `defect`; return the column touched."""
        r = self.rng
        if defect == "postcode":
            pc = row["postcode"]
            if not pc or pc.startswith("ZZ99"):
                pc = self.postcode(AREAS[0][2])
            row["postcode"] = f"{pc[:-3]} {pc[-3:]}" if r.random() < 0.5 else pc.lower()
            return "postcode"
        if defect == "cro-check":
            cro = row["cro_number"] or self.cro(int(row["date_of_birth"][-4:]))
            while not cro:
                cro = self.cro(int(row["date_of_birth"][-4:]))
            wrong = r.choice([c for c in CRO_ALPHABET if c != cro[-1]])
            row["cro_number"] = cro[:-1] + wrong
            return "cro_number"
        if defect == "date-31-02":
            row["date_of_birth"] = f"31/02/{r.randrange(1960, 2005)}"
            return "date_of_birth"
        if defect == "gender-male":
            row["gender"] = "male"
            return "gender"
        if defect == "formula":
            col = r.choice([c for c in FREE_TEXT if c != "victims_details"])
            row[col] = (
                r.choice(('=HYPERLINK("http://example.invalid","case file")', "=1+1", "=cmd|' /C calc'!A0"))
                + " "
                + row[col]
            )
            return col
        if defect == "ethnicity":
            row["ethnicity"] = r.choice(("White British", "W3", "Other", "Asian", "white - british"))
            return "ethnicity"
        raise ValueError(defect)


def generate_csv(path: Path, rows: int, seed: int, invalid_rate: float = 0.01, profile: str = "typical") -> Manifest:
    """Write `rows` data rows to `path` (RFC 4180, UTF-8, CRLF); return the manifest."""
    rng = random.Random(seed)
    factory = RowFactory(rng, profile)
    broken = sorted(rng.sample(range(rows), round(rows * invalid_rate)))
    kinds = {i: DEFECTS[n % len(DEFECTS)] for n, i in enumerate(broken)}
    manifest = Manifest(rows=rows)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for i in range(rows):
            row = factory.row()
            if i in kinds:
                manifest.invalid[i] = (kinds[i], factory.break_row(row, kinds[i]))
            writer.writerow([row[c] for c in COLUMNS])
    return manifest


# ---------------------------------------------------------------- table schema
def table_schema() -> dict[str, Any]:
    """Frictionless Table Schema with the gateway's rules, as far as it can go.

    Not expressible: the CRO check character, victims_details only with
    consent Y. Approximated: age 18-70 (date bounds). date_of_birth is a
    `date` field with format %d/%m/%Y, so impossible dates (31/02) are caught.
    """

    def string(name: str, **constraints: Any) -> dict[str, Any]:
        if name in REQUIRED:
            constraints["required"] = True
        return {"name": name, "type": "string", "constraints": constraints}

    fields: list[dict[str, Any]] = []
    for name in COLUMNS:
        if name == "title":
            fields.append(string(name, maxLength=20, pattern=TITLE_RX))
        elif name in ("forename", "surname"):
            fields.append(string(name, maxLength=50, pattern=NAME_RX))
        elif name in ONE_LINE:
            fields.append(string(name, maxLength=200 if name == "address_street" else 100, pattern=ONE_LINE_RX))
        elif name == "postcode":
            fields.append(string(name, maxLength=8, pattern=POSTCODE_RX))
        elif name == "gender":
            fields.append(string(name, enum=["M", "F"]))
        elif name == "ethnicity":
            fields.append(string(name, enum=[*ETHNICITY_CODES, *ETHNICITY_LABELS]))
        elif name == "date_of_birth":
            fields.append(
                {
                    "name": name,
                    "type": "date",
                    "format": "%d/%m/%Y",
                    "constraints": {"required": True, "minimum": DOB_MIN_TS, "maximum": DOB_MAX_TS},
                }
            )
        elif name == "cro_number":
            fields.append(string(name, maxLength=12, pattern=CRO_RX))
        elif name in FREE_TEXT:
            fields.append(string(name, maxLength=4000, pattern=FREE_TEXT_RX))
        elif name == "victim_consent":
            fields.append(string(name, enum=["Y", "N"]))
        else:
            raise AssertionError(name)
    return {"fields": fields, "missingValues": [""]}


def write_schema_files(workdir: Path) -> tuple[Path, Path]:
    """Write the Table Schema and an explicit CSV dialect (no sniffing)."""
    schema, dialect = workdir / "schema.json", workdir / "dialect.json"
    schema.write_text(json.dumps(table_schema(), indent=2, ensure_ascii=False), encoding="utf-8")
    dialect.write_text(
        json.dumps({"csv": {"delimiter": ",", "quoteChar": '"', "doubleQuote": True, "lineTerminator": "\r\n"}}),
        encoding="utf-8",
    )
    return schema, dialect


# ---------------------------------------------------------------- self-check
_POSTCODE = re.compile(POSTCODE_RX)
_CRO = re.compile(CRO_RX)
_NAME = re.compile(NAME_RX)
_TITLE = re.compile(TITLE_RX)
_DOB = re.compile(DOB_RX)
_FREE = re.compile(FREE_TEXT_RX)
_LINE = re.compile(ONE_LINE_RX)
_ETHNICITY = frozenset(ETHNICITY_CODES + ETHNICITY_LABELS)


def _age_ok(dob: dt.date) -> bool:
    """Aged 18..70 on both the first and the last day of the period."""

    def age(on: dt.date) -> int:
        return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))

    return all(18 <= age(d) <= 70 for d in (dt.date(2026, 10, 1), dt.date(2026, 10, 31)))


def _check_cro(value: str) -> str | None:
    """Defect name for a CRO cell, or None."""
    if not _CRO.fullmatch(value):
        return "cro-format"
    serial, rest = value.split("/")
    return None if cro_check_letter(serial, rest[:2]) == rest[2] else "cro-check"


def _check_dob(value: str) -> str | None:
    """Defect name for a date_of_birth cell, or None."""
    if not _DOB.fullmatch(value):
        return "date-format"
    try:
        dob = dt.datetime.strptime(value, "%d/%m/%Y").date()
    except ValueError:
        return "date-31-02"
    return None if _age_ok(dob) else "age"


def check_row(row: dict[str, str]) -> list[tuple[str, str]]:
    """Reference check of one row: list of (defect, column)."""
    out: list[tuple[str, str]] = []
    for col in REQUIRED:
        if not row[col]:
            out.append(("required", col))
    for col, value in row.items():
        if not value:
            continue
        bad: str | None = None
        if col == "title":
            bad = None if _TITLE.fullmatch(value) else "title"
        elif col in ("forename", "surname"):
            bad = None if _NAME.fullmatch(value) else "name"
        elif col in ONE_LINE:
            bad = None if _LINE.fullmatch(value) and len(value) <= 200 else "one-line"
        elif col == "postcode":
            bad = None if _POSTCODE.fullmatch(value) else "postcode"
        elif col == "gender":
            bad = None if value in ("M", "F") else "gender-male"
        elif col == "ethnicity":
            bad = None if value in _ETHNICITY else "ethnicity"
        elif col == "date_of_birth":
            bad = _check_dob(value)
        elif col == "cro_number":
            bad = _check_cro(value)
        elif col in FREE_TEXT:
            bad = None if len(value) <= 400 else "length"
            if not _FREE.fullmatch(value):
                bad = "formula" if value[0] == "=" else "control-character"
        elif col == "victim_consent":
            bad = None if value in ("Y", "N") else "consent"
        if bad:
            out.append((bad, col))
    if row["victims_details"] and row["victim_consent"] != "Y":
        out.append(("consent", "victims_details"))
    return out


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """Stream the CSV as dicts, asserting the header and the field count."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if tuple(header) != COLUMNS:
            raise ValueError(f"unexpected header {header}")
        for cells in reader:
            if len(cells) != len(COLUMNS):
                raise ValueError(f"line {reader.line_num}: {len(cells)} cells")
            yield dict(zip(COLUMNS, cells, strict=True))


def _self_check(path: Path, manifest: Manifest) -> bool:
    """Check valid rows break no rule and each broken row breaks exactly its one."""
    problems: list[str] = []
    seen = Counter[str]()
    n = 0
    for i, row in enumerate(read_rows(path)):
        n += 1
        found = check_row(row)
        expected = [manifest.invalid[i]] if i in manifest.invalid else []
        if found != expected and len(problems) < 10:
            problems.append(f"row {i + 1}: expected {expected}, found {found}")
        for col in FREE_TEXT:
            v = row[col]
            seen["multi-line cells"] += "\n" in v
            seen["cells with quotes"] += '"' in v
            seen["cells with commas"] += "," in v
        seen["non-ASCII names"] += not (row["forename"] + row["surname"]).isascii()
        seen["ZZ99 postcodes"] += row["postcode"].startswith("ZZ99")
        seen["blank CRO"] += not row["cro_number"]
        seen["ethnicity labels"] += len(row["ethnicity"]) > 2
    if n != manifest.rows:
        problems.append(f"{n} rows read, {manifest.rows} written")
    print(f"self-check {path.name}: {n} rows, {len(manifest.invalid)} broken {dict(sorted(manifest.counts().items()))}")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))
    for p in problems:
        print("  FAIL", p)
    print("  OK" if not problems else "  FAILED")
    return not problems


# ---------------------------------------------------------------- timing
@dataclass
class Run:
    """One child process: wall time, peak RSS, exit code and captured output."""

    seconds: float
    maxrss_kib: int
    code: int
    stdout: Path
    stderr: Path
    cpu: float = 0.0  # user + system seconds (ru_utime + ru_stime): steadier than wall time on a busy machine


# An editable install with PYTHONDONTWRITEBYTECODE set recompiles every gateway module at every start
# (about 165 ms): the children run without it, so what is timed is what an installed gateway costs.
DONT_WRITE = "PYTHONDONTWRITEBYTECODE"
CHILD_ENV = {k: v for k, v in os.environ.items() if k != DONT_WRITE}


def run_child(argv: Sequence[str], out: Path, err: Path, cwd: Path | None = None) -> Run:
    """Run argv to completion; wall clock and ru_maxrss via os.wait4."""
    with out.open("wb") as fo, err.open("wb") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=cwd, env=CHILD_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(seconds, usage.ru_maxrss, proc.returncode, out, err, usage.ru_utime + usage.ru_stime)


@dataclass
class Tool:
    """A command to benchmark and the exit codes that count as having run."""

    name: str
    argv: list[str]
    ok_codes: tuple[int, ...]
    cwd: Path | None = None
    runs: list[Run] = field(default_factory=list)

    def median(self) -> float:
        """Median wall-clock seconds."""
        return statistics.median(r.seconds for r in self.runs)

    def median_cpu(self) -> float:
        """Median user + system seconds."""
        return statistics.median(r.cpu for r in self.runs)

    def peak_mib(self) -> float:
        """Largest peak RSS over the runs, MiB."""
        return max(r.maxrss_kib for r in self.runs) / 1024


def ours_tool(csv_path: Path, root: Path = ROOT, name: str = "iom-gateway") -> Tool:
    """`iom-gateway --root ROOT validate FILE --agency police --period 2026-10 --json`."""
    argv = [str(BIN / "iom-gateway"), "--root", str(root), "validate", str(csv_path)]
    return Tool(name, [*argv, "--agency", AGENCY, "--period", PERIOD, "--json"], (0, 1))


def peer_tool(csv_path: Path, schema: Path, dialect: Path) -> Tool:
    """`frictionless validate` with our schema, every row, every error.

    Run from the file's folder with relative paths: frictionless refuses
    absolute paths outside its working directory as "not safe".
    """
    workdir = csv_path.parent
    argv = [str(BIN / "frictionless"), "validate", csv_path.name]
    argv += ["--schema", str(schema.relative_to(workdir)), "--dialect", str(dialect.relative_to(workdir))]
    argv += ["--encoding", "utf-8", "--format", "csv", "--limit-errors", "100000000", "--json"]
    return Tool("frictionless", argv, (0, 1), cwd=workdir)


def floor_tool(csv_path: Path) -> Tool:
    """Plain csv.reader over the file: the least any Python validator must do."""
    code = "import csv, sys; [r for r in csv.reader(open(sys.argv[1], newline='', encoding='utf-8'))]"
    return Tool("csv.reader floor", [sys.executable, "-c", code, str(csv_path)], (0,))


def time_tools(tools: list[Tool], repeat: int, workdir: Path, *, warm_up: bool = True) -> None:
    """Run each tool `repeat` times, interleaved, after one untimed run of ours (which writes the bytecode
    cache an editable install may lack); raise on an unexpected exit code."""
    for t in tools[:1] if warm_up else []:
        run_child(t.argv, workdir / "warm-up.out", workdir / "warm-up.err", t.cwd)
    for n in range(repeat):
        for t in tools:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", t.name)
            run = run_child(t.argv, workdir / f"{slug}.{n}.out", workdir / f"{slug}.{n}.err", t.cwd)
            if run.code not in t.ok_codes:
                raise RuntimeError(f"{t.name} exited {run.code}:\n{run.stderr.read_text(errors='replace')[-3000:]}")
            t.runs.append(run)


# ---------------------------------------------------------------- reports
def ours_summary(path: Path) -> dict[str, Any]:
    """rows, total errors and per-rule counts from `iom-gateway validate --json`."""
    report = json.loads(path.read_text(encoding="utf-8"))
    counts: dict[str, int] = report.get("counts", {})
    return {
        "rows": report.get("rows"),
        "errors": sum(counts.values()),
        "counts": counts,
        "listed": report.get("errors", []),
        "valid": report.get("valid"),
    }


def peer_summary(path: Path) -> dict[str, Any]:
    """rows, total errors and per-type counts from `frictionless validate --json`.

    Raises if frictionless could not read the resource at all.
    """
    report = json.loads(path.read_text(encoding="utf-8"))
    task = report["tasks"][0]
    errors = task.get("errors", [])
    fatal = [e for e in errors if e.get("type") in ("resource-error", "source-error", "scheme-error")]
    if fatal or task["stats"].get("rows") is None:
        raise RuntimeError(f"frictionless did not read the file: {(fatal or [{}])[0].get('message')}")
    return {
        "rows": task["stats"]["rows"],
        "errors": task["stats"].get("errors"),
        "counts": dict(Counter(e.get("type", "?") for e in errors)),
        "fields": dict(Counter(e.get("fieldName", "-") for e in errors)),
        "warnings": task.get("warnings", []) + report.get("warnings", []),
    }


def compare_with_manifest(listed: list[dict[str, Any]], manifest: Manifest) -> list[str]:
    """Lines describing rules firing on valid rows or wrong columns, and broken rows missed.

    Ours' row numbering is inferred: the offset (0, 1 or 2 against the
    0-based data row) that puts most errors on known broken rows.
    """
    rows: list[int] = [e["row"] for e in listed if isinstance(e.get("row"), int)]
    if not rows:
        return ["ours listed no per-row errors to compare"]
    offset = max((0, 1, 2), key=lambda k: sum((r - k) in manifest.invalid for r in rows))
    lines = [f"ours' numbering: first data row is row {offset} (frictionless: 2)"]
    odd: dict[tuple[str, str, str], list[int]] = {}
    flagged: set[int] = set()
    for e in listed:
        if not isinstance(e.get("row"), int):
            continue
        idx, rule, col = e["row"] - offset, str(e.get("rule")), str(e.get("column"))
        if idx not in manifest.invalid:
            odd.setdefault(("on VALID row", rule, col), []).append(e["row"])
        elif manifest.invalid[idx][1] != col:
            odd.setdefault(("on broken row, other column", rule, col), []).append(e["row"])
        else:
            flagged.add(idx)
    for (where, rule, col), rs in sorted(odd.items()):
        lines.append(f"  {where}: rule {rule} column {col}: {len(rs)} (e.g. row {rs[0]})")
    missed = sorted(i for i in manifest.invalid if i not in flagged)
    for kind, n in sorted(Counter(manifest.invalid[i][0] for i in missed).items()):
        example = next(i for i in missed if manifest.invalid[i][0] == kind)
        lines.append(f"  broken rows NOT flagged: {kind}: {n} (e.g. row {example + offset})")
    if len(lines) == 1:
        lines.append(
            f"  all {len(rows)} listed errors are on their broken row and column; "
            f"{len(flagged)}/{len(manifest.invalid)} broken rows flagged"
        )
    return lines


def machine_info() -> str:
    """One line: CPUs, Python, platform, tool versions."""

    def ver(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"nproc {cpus}, Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"frictionless {ver('frictionless')}, iom-gateway {ver('iom-gateway')}"
    )


def render_table(rows: list[list[str]], markdown: bool) -> str:
    """Plain aligned text or a Markdown table; first row is the header."""
    if markdown:
        out = [
            "| " + " | ".join(rows[0]) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|",
        ]
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def report(tools: list[Tool], rows: int, errors: dict[str, str], markdown: bool) -> None:
    """Print the results table and the ours/frictionless throughput ratio."""
    table = [["tool", "median s", "rows/s", "CPU s", "peak RSS MiB", "errors reported"]]
    rate: dict[str, float] = {}
    for t in tools:
        rate[t.name] = rows / t.median()
        table.append(
            [
                t.name,
                f"{t.median():.2f}",
                f"{rate[t.name]:,.0f}",
                f"{t.median_cpu():.2f}",
                f"{t.peak_mib():.0f}",
                errors.get(t.name, "-"),
            ]
        )
    print(render_table(table, markdown))
    if "frictionless" in rate:
        ours, peer = tools[0], next(t for t in tools if t.name == "frictionless")
        print(
            f"\nours/frictionless rows/s: {rate['iom-gateway'] / rate['frictionless']:.2f}x (goal 5x); "
            f"CPU time: {peer.median_cpu() / ours.median_cpu():.2f}x"
        )


# ---------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=20261121)
    p.add_argument("--keep", type=Path, metavar="DIR", help="write files here and keep them")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--self-check", action="store_true", help="generate, check the file against the rules, and stop")
    p.add_argument("--profile", choices=sorted(PROFILES), default="typical", help="how much free text a row carries")
    p.add_argument("--stream-check", action="store_true", help="also compare our peak RSS at --rows and 10x --rows")
    return p.parse_args(argv)


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    """Generate, validate with each tool, print the report."""
    csv_path = workdir / f"iom-{args.rows}.csv"
    t0 = time.perf_counter()
    manifest = generate_csv(csv_path, args.rows, args.seed, profile=args.profile)
    (workdir / f"iom-{args.rows}.manifest.json").write_text(json.dumps(manifest.to_json()))
    print(
        f"generated {csv_path} ({csv_path.stat().st_size / 2**20:.0f} MiB, {args.rows:,} rows, profile "
        f"{args.profile} ({csv_path.stat().st_size / args.rows:,.0f} bytes a row), "
        f"{len(manifest.invalid)} broken: {dict(sorted(manifest.counts().items()))}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    if args.self_check:
        return 0 if _self_check(csv_path, manifest) else 1
    schema, dialect = write_schema_files(workdir)
    print(machine_info())
    was = "set" if DONT_WRITE in os.environ else "not set"
    print(f"load average {os.getloadavg()[0]:.2f} at the start; children run without {DONT_WRITE} (here: {was})")
    print(
        "frictionless schema: date_of_birth as type date, format %d/%m/%Y, min/max bounds for age; "
        "CRO check letter and victims' consent not expressible"
    )
    tools = [ours_tool(csv_path), peer_tool(csv_path, schema, dialect), floor_tool(csv_path)]
    time_tools(tools, args.repeat, workdir)
    ours = ours_summary(tools[0].runs[-1].stdout)
    peer = peer_summary(tools[1].runs[-1].stdout)
    print(f"\n{args.rows:,} rows, median of {args.repeat} runs, whole processes:\n")
    report(tools, args.rows, {"iom-gateway": str(ours["errors"]), "frictionless": str(peer["errors"])}, args.markdown)
    expected_peer = len(manifest.invalid) - manifest.counts()["cro-check"]
    print(f"\nbroken rows {len(manifest.invalid)} (frictionless can see {expected_peer})")
    print(f"ours rows={ours['rows']} counts={dict(sorted(ours['counts'].items()))}")
    print(f"frictionless rows={peer['rows']} types={peer['counts']} fields={peer['fields']}")
    for w in peer["warnings"]:
        print(f"frictionless warning: {w}")
    for name, got in (("iom-gateway", ours["rows"]), ("frictionless", peer["rows"])):
        if got != args.rows:
            print(f"WARNING: {name} reported {got} rows, {args.rows} were written")
    for line in compare_with_manifest(ours["listed"], manifest):
        print(line)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.stream_check:
        stream_check(args, workdir, csv_path, tools[0].peak_mib())
    return 0


def scratch_root(workdir: Path, max_bytes: int, max_rows: int) -> Path:
    """A copy of the gateway root whose limits admit the big file (repo untouched)."""
    root = workdir / "scratch-root"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(ROOT / "schemas", root / "schemas")
    text = (ROOT / "gateway.toml").read_text(encoding="utf-8")
    for key, value in (("max_file_bytes", max_bytes), ("max_rows", max_rows)):
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\d+", f"{key} = {value}", text)
        if n != 1:
            raise RuntimeError(f"gateway.toml: cannot raise limits.{key}")
    (root / "gateway.toml").write_text(text, encoding="utf-8")
    return root


def stream_check(args: argparse.Namespace, workdir: Path, small: Path, small_mib: float) -> None:
    """Our peak RSS at --rows vs 10x --rows (frictionless skipped).

    The 10x file is over the default 256 MiB limits.max_file_bytes, so this
    runs against a scratch copy of the root with the file and row limits raised.
    """
    big_rows = args.rows * 10
    big = workdir / f"iom-{big_rows}.csv"
    manifest = generate_csv(big, big_rows, args.seed, profile=args.profile)
    root = scratch_root(workdir, max(big.stat().st_size, small.stat().st_size) * 2, big_rows * 2)
    t = ours_tool(big, root=root, name=f"iom-gateway {big_rows}")
    time_tools([t], 1, workdir, warm_up=False)
    ours = ours_summary(t.runs[0].stdout)
    print(
        f"\nstream check (scratch root, file/row limits raised): ours peak RSS {small_mib:.0f} MiB at "
        f"{args.rows:,} rows ({small.stat().st_size / 2**20:.0f} MiB file), {t.peak_mib():.0f} MiB at "
        f"{big_rows:,} rows ({big.stat().st_size / 2**20:.0f} MiB file); {t.median():.1f}s, "
        f"{big_rows / t.median():,.0f} rows/s, {ours['errors']} errors ({len(manifest.invalid)} broken rows), "
        f"rows={ours['rows']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 done, 1 self-check failed, 2 a tool failed to run."""
    args = parse_args(argv)
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            return benchmark(args, args.keep.resolve())
        with tempfile.TemporaryDirectory(prefix="iom-bench-") as tmp:
            return benchmark(args, Path(tmp))
    except RuntimeError as exc:
        print(f"bench/validate.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

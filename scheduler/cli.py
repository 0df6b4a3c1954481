"""The ``mcsched`` command line: a thin shell over the engine, ledger and runtime.

Every ``MCSchedError`` becomes one line on stderr and its exit code; a traceback for user
error is a bug.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import LedgerError, MCSchedError, SpecError, SpecErrors
from scheduler.ledger import Ledger
from scheduler.loading import check_contract, check_job, load_catalog, load_contract, load_files, load_jobs
from scheduler.model import Job
from scheduler.paths import default_catalog, default_contract
from scheduler.render import decisions_json, decisions_table
from scheduler.specs import CloudCatalog, Contract, JobDoc

app = typer.Typer(
    name="mcsched",
    help="Multi-cloud scheduler for LLM jobs with an Azure right of first refusal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Inspect and verify the audit ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, highlight=False)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


CatalogOpt = Annotated[Path | None, typer.Option("--clouds", help="CloudCatalog YAML (default: shipped example).")]
ContractOpt = Annotated[Path | None, typer.Option("--contract", help="Contract YAML (default: shipped example).")]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, markup=False)
    return typer.Exit(code)


def load_config(clouds: Path | None, contract: Path | None) -> tuple[CloudCatalog, Contract]:
    catalog = load_catalog(clouds or default_catalog())
    return catalog, load_contract(contract or default_contract(), catalog)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Spec files (any kind, many documents each).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
) -> None:
    """Check spec files; print one line per problem as file:line: field: why."""
    loaded, errors = load_files(files)
    catalogs = [x for x in loaded if isinstance(x.model, CloudCatalog)]
    contracts = [x for x in loaded if isinstance(x.model, Contract)]
    catalog: CloudCatalog | None = None
    try:
        catalog = catalogs[0].model if catalogs else load_catalog(clouds or default_catalog())  # type: ignore[assignment]
        assert isinstance(catalog, CloudCatalog)
        for item in contracts:
            assert isinstance(item.model, Contract)
            errors.extend(check_contract(item.model, catalog, item.doc))
        the_contract = contracts[0].model if contracts else load_contract(contract or default_contract(), catalog)
        assert isinstance(the_contract, Contract)
        seen: dict[str, str] = {}
        for item in loaded:
            if isinstance(item.model, JobDoc):
                name = item.model.metadata.name
                if name in seen:
                    errors.append(
                        SpecError(
                            item.doc.file,
                            f"duplicate job name {name!r} (first defined at {seen[name]})",
                            line=item.doc.line_of(("metadata", "name")),
                            field="metadata.name",
                        )
                    )
                seen.setdefault(name, f"{item.doc.file}:{item.doc.line}")
                errors.extend(check_job(item.model, catalog, the_contract, item.doc))
    except SpecErrors as exc:
        errors.extend(exc.errors)
    except SpecError as exc:
        errors.append(exc)
    if errors:
        for e in errors:
            err.print(e.one_line(), markup=False)
        raise typer.Exit(2)
    out.print(f"ok: {len(loaded)} document(s) in {len(files)} file(s)", markup=False)


@app.command()
def plan(
    jobs: Annotated[list[Path], typer.Argument(help="Job YAML files, placed in order.")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    db: Annotated[Path | None, typer.Option("--db", help="Write the audit ledger here (a new file).")] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")] = OutputFormat.TABLE,
    explain: Annotated[bool, typer.Option("--explain", help="Say why each backend was not used.")] = False,
) -> None:
    """Place jobs against a catalog and contract offline (no Ray) and print the decisions."""
    catalog, the_contract = load_config(clouds, contract)
    docs = load_jobs(jobs, catalog, the_contract)
    engine = Engine(catalog, the_contract, ManualClock())
    ledger: Ledger | None = None
    if db is not None:
        ledger = Ledger(db)
        if not ledger.empty:
            ledger.close()
            raise LedgerError(f"{db}: already holds {len(ledger)} records; plan writes a new ledger, pass a new path")
        engine.subscribe(ledger)
        engine.announce()
    try:
        decisions = engine.place_many([Job.from_doc(d) for d in docs])
        if ledger is not None:
            ledger.flush()
    finally:
        if ledger is not None:
            ledger.close()
    if output is OutputFormat.JSON:
        print(decisions_json(decisions, explain))
    else:
        out.print(decisions_table(decisions, explain, title=f"{len(decisions)} decision(s), holder {engine.holder}"))


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns known errors into one-line messages."""
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except SpecErrors as exc:
        for e in exc.errors:
            err.print(e.one_line(), markup=False)
        sys.exit(exc.exit_code)
    except SpecError as exc:
        err.print(exc.one_line(), markup=False)
        sys.exit(exc.exit_code)
    except MCSchedError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted", markup=False)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)

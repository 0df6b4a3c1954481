"""Offline commands: validate specs, plan placements (no Ray), render manifests.

Each command imports what it uses in its body: every ``mcsched`` run imports this module to
register the commands, and a plan without ``--db`` must not pay for the ledger's SQLite and
cryptography, nor ``manifests`` for the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scheduler.cli.app import (
    CatalogOpt,
    ContractOpt,
    OutputFormat,
    app,
    busy,
    fail,
    load_config,
    out,
    print_decisions,
    print_spec_errors,
    stage_progress,
)
from scheduler.errors import LedgerError, LedgerInputError, SpecError, SpecErrors
from scheduler.paths import default_catalog, default_contract

if TYPE_CHECKING:
    from scheduler.ledger import Ledger
    from scheduler.model import Job
    from scheduler.specs import JobDoc


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Spec files: YAML (any kind, many documents each) or JSON Lines (.jsonl, one document a line).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
) -> None:
    """Check spec files; print one line per problem as file:line: field: why.

    Jobs and contracts are checked against one catalog: --clouds when given, else the first CloudCatalog among the files, else the shipped example; jobs against one contract, chosen the same way (--contract). The ok line names both. Every catalog and contract among the files is itself checked either way.
    """
    from scheduler.loading import check_contract, check_jobs, load_catalog, load_contract, load_files
    from scheduler.sim.scenario import check_scenario
    from scheduler.specs import CloudCatalog, Contract, JobDoc, Scenario

    with stage_progress() as progress:
        loaded, errors = load_files(files, progress)
    catalogs = [x for x in loaded if isinstance(x.model, CloudCatalog)]
    contracts = [x for x in loaded if isinstance(x.model, Contract)]
    jobs = [x for x in loaded if isinstance(x.model, JobDoc)]
    used = ""
    try:
        if clouds is not None or not catalogs:
            catalog = load_catalog(clouds or default_catalog())
            catalog_from = str(clouds) if clouds is not None else "the shipped example catalog"
        else:
            catalog, catalog_from = catalogs[0].model, str(catalogs[0].doc.file)  # type: ignore[assignment]
        assert isinstance(catalog, CloudCatalog)
        for item in contracts:
            assert isinstance(item.model, Contract)
            errors.extend(check_contract(item.model, catalog, item.doc))
        if contract is not None or not contracts:
            the_contract = load_contract(contract or default_contract(), catalog)
            contract_from = str(contract) if contract is not None else "the shipped example contract"
        else:
            the_contract, contract_from = contracts[0].model, str(contracts[0].doc.file)  # type: ignore[assignment]
        assert isinstance(the_contract, Contract)
        errors.extend(check_jobs(jobs, catalog, the_contract)[1])
        scenarios = [x for x in loaded if isinstance(x.model, Scenario)]
        for item in scenarios:
            assert isinstance(item.model, Scenario)
            errors.extend(check_scenario(item.model, item.doc, catalog))
        if jobs:
            used = f" (jobs checked against {catalog_from} and {contract_from})"
        elif contracts or scenarios:
            used = f" ({'contracts' if contracts else 'scenarios'} checked against {catalog_from})"
    except SpecErrors as exc:
        errors.extend(exc.errors)
    except SpecError as exc:
        errors.append(exc)
    if errors:
        print_spec_errors(errors)
        raise typer.Exit(2)
    out.print(f"ok: {len(loaded)} document(s) in {len(files)} file(s){used}", markup=False)


@app.command()
def plan(
    jobs: Annotated[list[Path], typer.Argument(help="Job files, placed in order: YAML, or JSON Lines (.jsonl, one Job a line).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    db: Annotated[Path | None, typer.Option("--db", help="Write the audit ledger here (a new file).")] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json (an array, one decision a line) or ndjson")] = OutputFormat.TABLE,
    explain: Annotated[bool, typer.Option("--explain", help="Say why each backend was not used.")] = False,
    signing_key: Annotated[Path | None, typer.Option("--signing-key", help="Ledger signing key (default $MCSCHED_HOME/ledger-signing.key).")] = None,
) -> None:
    """Place jobs against a catalog and contract offline (no Ray) and print where each job ends up."""
    from scheduler.clock import ManualClock
    from scheduler.engine import Engine
    from scheduler.joblines import is_plain_jsonl, load_engine_jobs
    from scheduler.loading import load_jobs

    catalog, the_contract = load_config(clouds, contract)
    with stage_progress() as progress:
        # JSON Lines of plain jobs decode straight to engine jobs (msgspec; a quarter of a 100k-job
        # plan's CPU was the general path); anything else, errors included, takes the general path.
        docs = load_engine_jobs(jobs, catalog, the_contract, progress) if is_plain_jsonl(jobs) else None
        if docs is None:
            docs = engine_jobs(load_jobs(jobs, catalog, the_contract, progress))
    engine = Engine(catalog, the_contract, ManualClock())
    ledger: Ledger | None = None
    if db is not None:
        from scheduler.ledger import Ledger

        try:  # --db names where plan writes: a file it cannot use is bad input (exit 2), as a spec error is
            ledger = Ledger(db, signing_key=signing_key)
        except LedgerError as exc:
            raise LedgerInputError(str(exc)) from None
        if not ledger.empty:
            ledger.close()
            raise LedgerInputError(f"{db}: already holds {len(ledger)} records; plan writes a new ledger, pass a new path")
        engine.subscribe(ledger)
        engine.announce()
    try:
        with busy(f"placing {len(docs):,} jobs", len(docs)):
            engine.post_many(docs)
        if ledger is not None:
            ledger.flush()
    finally:
        if ledger is not None:
            ledger.close()
    decisions = engine.decisions()  # where every job stands once all are placed (later jobs may have moved earlier ones)
    print_decisions(decisions, output, explain, title=f"{len(decisions)} job(s) after placing them in order, holder {engine.holder}")


def engine_jobs(docs: list[JobDoc]) -> list[Job]:
    """The engine jobs of Job documents in order: ``planned_jobs`` of each (a job per plain document)."""
    from scheduler.model import Job

    from_doc = Job.from_doc
    jobs: list[Job] = []
    for doc in docs:
        if doc.spec.serve is None:
            jobs.append(from_doc(doc))
        else:
            jobs.extend(planned_jobs(doc))
    return jobs


def planned_jobs(doc: JobDoc) -> list[Job]:
    """The engine jobs of one Job document: itself, or a served model's first ``replicas.min`` replicas.

    A served model is not one gang: each replica is placed on its own, as the live
    controller does at deployment (it scales between min and max later).
    """
    from scheduler.model import Job

    if doc.spec.serve is None:
        return [Job.from_doc(doc)]
    from scheduler.runtime.serve.naming import replica_doc
    from scheduler.specs import JobDoc

    raw = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    return [Job.from_doc(JobDoc.model_validate(replica_doc(raw, k))) for k in range(1, doc.spec.serve.replicas.min + 1)]


@app.command("manifests")
def manifests_cmd(check: Annotated[bool, typer.Option("--check", help="Exit 1 if a generated manifest is stale.")] = False) -> None:
    """Render manifests/base/generated/ from deploy/ (catalog, contract, rules, dashboard), and each
    example's generated/ (manifests/examples/blocks: a worker group per pool bought in blocks)."""
    from scheduler.kube.render import stale, write
    from scheduler.paths import PACKAGE_DIR

    repo = PACKAGE_DIR.parent
    if check:
        bad = stale(repo)
        if bad:
            raise fail(f"generated manifests are stale: {', '.join(bad)} (run `mcsched manifests`)", 1)
        out.print("generated manifests are up to date", markup=False)
        return
    for path in write(repo):
        out.print(f"wrote {path.relative_to(repo)}", markup=False)



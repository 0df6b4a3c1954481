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
from scheduler.decision import Decision
from scheduler.engine import Engine
from scheduler.errors import LedgerError, MCSchedError, SpecError, SpecErrors
from scheduler.ledger import Ledger
from scheduler.loading import check_contract, check_jobs, load_catalog, load_contract, load_files, load_jobs
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
        errors.extend(check_jobs([x for x in loaded if isinstance(x.model, JobDoc)], catalog, the_contract)[1])
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


# --------------------------------------------------------------------------- runtime commands
# Ray is imported lazily so the offline commands start fast and work without a cluster.

StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory (default $MCSCHED_HOME or ~/.mcsched).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray GCS address (default: RAY_ADDRESS or the local cluster).")]


def _state(state_dir: Path | None) -> Path:
    from scheduler.paths import state_dir as default_state

    return (state_dir or default_state()).expanduser().resolve()


def _connect(address: str | None, state_dir: Path | None, *, embedded: bool = False, stream: bool = False) -> None:
    from scheduler.errors import RuntimeUnavailable
    from scheduler.runtime.cluster import connect, resolve_address, up

    state = _state(state_dir)
    resolved = resolve_address(address, state)
    if resolved is None:
        if not embedded:
            raise RuntimeUnavailable("no Ray cluster found: run `mcsched up` first or pass --address")
        err.print("no Ray cluster found; starting the embedded default (`mcsched up`) ...", markup=False)
        catalog, the_contract = load_config(None, None)
        info = up(catalog, the_contract, state, log=lambda m: err.print(m, markup=False))
        resolved = info.gcs_address
    connect(resolved, log_to_driver=stream)


def _call(method: str, *args: object) -> object:
    """Call the scheduler actor; its errors (unknown job, ...) become one-line MCSchedErrors."""
    import ray

    from scheduler.runtime.actor import get_actor

    try:
        return ray.get(getattr(get_actor(), method).remote(*args))
    except ray.exceptions.RayTaskError as exc:
        raise MCSchedError(str(exc.cause or exc).splitlines()[0]) from None


@app.command("up")
def up_cmd(
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    state_dir: StateOpt = None,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Scheduler metrics port on 127.0.0.1.")] = 9464,
    prometheus: Annotated[bool, typer.Option("--prometheus", help="Also start a local Prometheus scraping mcsched.")] = False,
) -> None:
    """Start a local Ray head (loopback only) with every mock cloud, and the scheduler actor."""
    from scheduler.runtime.cluster import up

    catalog, the_contract = load_config(clouds, contract)
    info = up(catalog, the_contract, _state(state_dir), metrics_port=metrics_port, log=lambda m: err.print(m, markup=False))
    if prometheus:
        from scheduler.promlocal import start_local_prometheus

        info = start_local_prometheus(info, metrics_port)
    out.print(f"Ray GCS:        {info.gcs_address}", markup=False)
    out.print(f"Ray dashboard:  {info.dashboard_url}  (Jobs API for `ray job submit --address`)", markup=False)
    out.print(f"metrics:        {info.metrics_url}", markup=False)
    if info.prometheus_url:
        out.print(f"Prometheus:     {info.prometheus_url}", markup=False)
    out.print(f"state/ledger:   {info.state_dir}", markup=False)
    if info.auth_token_path:
        out.print("Ray token authentication is on; before `ray job submit`, run:", markup=False)
        for line in info.export_lines():
            out.print(f"  {line}", markup=False)
    out.print(
        f"submit a job:   ray job submit --address {info.dashboard_url} --working-dir deploy/examples -- python -m scheduler run job.yaml",
        markup=False,
    )


@app.command("simulate")
def simulate_cmd(
    trace: Annotated[Path, typer.Option("--trace", help="Workload trace file.")],
    fmt: Annotated[str, typer.Option("--format", help="alibaba-openb | azure-llm | csv")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory (summary.json, ledger.db, plots, report.md).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    policy: Annotated[str, typer.Option("--policy", help="contract | cheapest (ignores the contract) | azure-only (never spills)")] = "contract",
    columns: Annotated[str | None, typer.Option("--columns", help="csv: arrival=COL,gpus=COL,duration=COL[,class=COL,gpu_type=COL,name=COL]")] = None,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and skip bad rows instead of stopping.")] = False,
    capacity_trace: Annotated[Path | None, typer.Option("--capacity-trace", help="Directory of spot-availability JSON files.")] = None,
    capacity_cloud: Annotated[str, typer.Option("--capacity-cloud", help="Cloud whose pools the capacity trace drives.")] = "aws",
    speedup: Annotated[float, typer.Option("--speedup", help="Compress arrival times by this factor (more offered load).")] = 1.0,
) -> None:
    """Replay a trace through the real engine on a simulated clock; write a report."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scheduler.errors import TraceError
    from scheduler.sim.report import plots, write_report
    from scheduler.sim.simulator import POLICIES, Simulation
    from scheduler.sim.traces import FORMATS, ReadStats, read_spot_dir, read_trace

    if fmt not in FORMATS:
        raise TraceError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if policy not in POLICIES:
        raise TraceError(f"--policy: unknown policy {policy!r} (expected one of {', '.join(POLICIES)})")
    if speedup <= 0:
        raise TraceError("--speedup: must be > 0")
    catalog, the_contract = load_config(clouds, contract)
    stats = ReadStats()
    jobs = read_trace(trace, fmt, columns=columns, skip_bad_rows=skip_bad_rows, stats=stats)
    spot = read_spot_dir(capacity_trace) if capacity_trace else None
    if spot is not None and capacity_cloud not in catalog.backend_names:
        raise TraceError(f"--capacity-cloud: {capacity_cloud!r} is not in the catalog")
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "ledger.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    ledger = Ledger(db)
    sim = Simulation(catalog, the_contract, policy, sinks=[ledger])
    sim.add_jobs(jobs, speedup)
    driven = sim.add_capacity_trace(spot, capacity_cloud, "H100", speedup) if spot else []
    started = time.perf_counter()
    with Progress(TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("jobs", total=len(jobs))
        sim.run(progress=lambda n: bar.advance(task, n), flush=ledger.flush)
    ledger.flush()
    ledger.close()
    wall = time.perf_counter() - started
    summary = sim.summary()
    summary["trace"] = {"path": str(trace), "format": fmt, **stats.to_dict(), "capacityTrace": driven}
    summary["wallSeconds"] = wall
    summary["eventsPerSecond"] = (summary["events"]["engine"] + summary["events"]["simulation"]) / wall if wall else 0.0
    images = plots(sim.samples, out_dir)
    write_report(out_dir, summary, images, str(trace), wall)
    out.print(
        f"{summary['jobs']:,} jobs, {summary['simulatedSeconds'] / 86400:.1f} simulated days in {wall:.1f}s "
        f"({summary['eventsPerSecond']:,.0f} events/s); holder share {summary['holderShareOfGpuHours']:.1%}, "
        f"cost ${summary['costUsdTotal']:,.0f}, violations {sum(summary['contractViolations'].values())}",
        markup=False,
    )
    out.print(f"wrote {out_dir}/summary.json, report.md, ledger.db, {', '.join(images)}", markup=False)


@app.command("manifests")
def manifests_cmd(check: Annotated[bool, typer.Option("--check", help="Exit 1 if manifests/base/generated is stale.")] = False) -> None:
    """Render manifests/base/generated/ from deploy/ (catalog, contract, rules, dashboard)."""
    from scheduler.kube.render import stale, write
    from scheduler.paths import PACKAGE_DIR

    repo = PACKAGE_DIR.parent
    if check:
        bad = stale(repo)
        if bad:
            raise fail(f"manifests/base/generated is stale: {', '.join(bad)} (run `mcsched manifests`)", 1)
        out.print("manifests/base/generated is up to date", markup=False)
        return
    for path in write(repo):
        out.print(f"wrote {path.relative_to(repo)}", markup=False)


@app.command("down")
def down_cmd(state_dir: StateOpt = None) -> None:
    """Stop everything `mcsched up` started (Ray head, scheduler actor, local Prometheus)."""
    from scheduler.runtime.cluster import down

    out.print("stopped" if down(_state(state_dir)) else "nothing to stop", markup=False)


@app.command("serve")
def serve_cmd(
    address: Annotated[str, typer.Option("--address", help="Existing Ray cluster (e.g. a KubeRay head).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    configmap: Annotated[str | None, typer.Option("--configmap", help="Read catalog.yaml/contract.yaml from this ConfigMap (in-cluster).")] = None,
    state_dir: StateOpt = None,
    ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger path as seen by the actor's node.")] = None,
    metrics_port: Annotated[int, typer.Option("--metrics-port")] = 9464,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="0.0.0.0 inside a pod.")] = "127.0.0.1",
    supervise: Annotated[bool, typer.Option("--supervise", help="Stay up and re-create the actor if the cluster loses it.")] = False,
) -> None:
    """Start only the scheduler actor against an existing Ray cluster."""
    import time

    from scheduler.runtime.actor import ensure_actor
    from scheduler.runtime.cluster import connect

    if configmap is not None:
        from scheduler.kube.config import config_from_configmap

        catalog, the_contract = config_from_configmap(configmap)
    else:
        catalog, the_contract = load_config(clouds, contract)
    if ledger is None:
        state = _state(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        ledger = str(state / "ledger.db")
    args = (catalog.model_dump(mode="json", by_alias=True), the_contract.model_dump(mode="json", by_alias=True), ledger, metrics_port, metrics_host)
    connect(address)
    ensure_actor(*args)
    out.print(f"scheduler actor running on {address}; metrics on {metrics_host}:{metrics_port}", markup=False)
    while supervise:
        time.sleep(15)
        ensure_actor(*args)


@app.command("run")
def run_cmd(
    job: Annotated[Path, typer.Argument(help="One Job YAML.")],
    address: AddressOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Place one job through the scheduler and run it on the chosen cloud (the Ray job driver)."""
    from scheduler.loading import load_files

    loaded, errors = load_files([job])
    if errors:
        raise SpecErrors(errors)
    docs = [x for x in loaded if isinstance(x.model, JobDoc)]
    if len(docs) != 1 or len(loaded) != 1:
        raise SpecError(str(job), f"expected exactly one Job document, found {len(loaded)} document(s)")
    _connect(address, state_dir, embedded=True, stream=True)
    from scheduler.runtime.driver import run_job  # imports ray: after _connect set up auth

    code = run_job(docs[0].doc.data, str(job), _state(state_dir) / "checkpoints", say=lambda m: out.print(m, markup=False))
    raise typer.Exit(code)


@app.command("submit")
def submit_cmd(
    files: Annotated[list[Path], typer.Argument(help="Job YAML files; each job becomes one Ray job.")],
    address: Annotated[str | None, typer.Option("--address", help="Ray dashboard URL (default: the local cluster).")] = None,
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Submit jobs as Ray jobs (Jobs SDK); each runs `python -m scheduler run` on the cluster."""
    import shutil
    import tempfile
    import uuid

    import yaml
    from ray.job_submission import JobSubmissionClient

    from scheduler.runtime.cluster import ClusterInfo, apply_client_env

    catalog, the_contract = load_config(clouds, contract)
    docs = load_jobs(files, catalog, the_contract)
    info = ClusterInfo.load(_state(state_dir))
    if info is not None:
        apply_client_env(info)
    url = address or (info.dashboard_url if info else None)
    if url is None:
        raise MCSchedError("no Ray cluster found: run `mcsched up` first or pass --address")
    client = JobSubmissionClient(url)
    for doc in docs:
        tmp = Path(tempfile.mkdtemp(prefix="mcsched-"))
        try:
            (tmp / "job.yaml").write_text(yaml.safe_dump(doc.model_dump(mode="json", by_alias=True, exclude_none=True)))
            sid = client.submit_job(
                entrypoint="python -m scheduler run job.yaml",
                runtime_env={"working_dir": str(tmp)},
                submission_id=f"mcsched-{doc.metadata.name}-{uuid.uuid4().hex[:6]}",
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"{doc.metadata.name}\t{sid}", flush=True)


@app.command("status")
def status_cmd(
    job: Annotated[str | None, typer.Argument(help="A job name (default: all jobs).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Say why each backend was not used.")] = False,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
    address: AddressOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Where each job stands (placed where and why, or queued and why)."""
    _connect(address, state_dir)
    rows = _call("status", job)
    assert isinstance(rows, list)
    decisions = [Decision.from_dict(r) for r in rows]
    if output is OutputFormat.JSON:
        print(decisions_json(decisions, explain))
    else:
        out.print(decisions_table(decisions, explain))


@app.command("list")
def list_cmd(address: AddressOpt = None, state_dir: StateOpt = None) -> None:
    """One line per job."""
    _connect(address, state_dir)
    rows = _call("status", None)
    assert isinstance(rows, list)
    for r in rows:
        out.print(Decision.from_dict(r).line(), markup=False)


@app.command("cancel")
def cancel_cmd(job: str, address: AddressOpt = None, state_dir: StateOpt = None) -> None:
    """Cancel a queued or running job and release its capacity."""
    _connect(address, state_dir)
    row = _call("cancel", job)
    assert isinstance(row, dict)
    out.print(f"{job}: {row['outcome']}", markup=False)


@app.command("fault")
def fault_cmd(
    cloud: str,
    down: Annotated[bool | None, typer.Option("--down/--up", help="Take the mock backend down, or bring it back.")] = None,
    latency: Annotated[float | None, typer.Option("--extra-latency", min=0.0, help="Extra response seconds (slow holder); 0 clears.")] = None,
    address: AddressOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Inject a mock-backend fault (outage or slowness) into the running scheduler."""
    if down is None and latency is None:
        raise fail("fault: say what to change: --down, --up and/or --extra-latency SECONDS")
    _connect(address, state_dir)
    _call("fault", cloud, None if down is None else not down, latency)
    parts = ([] if down is None else ["down" if down else "up"]) + ([] if latency is None else [f"+{latency:g}s latency"])
    out.print(f"{cloud}: {', '.join(parts)}", markup=False)

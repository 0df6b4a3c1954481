"""Runtime commands: the local cluster, the scheduler actor, the Ray job driver, job control."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.app import (
    AddressOpt,
    CatalogOpt,
    ContractOpt,
    OutputFormat,
    StateOpt,
    _call,
    _connect,
    _state,
    app,
    err,
    fail,
    load_config,
    out,
)
from scheduler.decision import Decision
from scheduler.errors import MCSchedError, SpecError, SpecErrors
from scheduler.loading import load_jobs
from scheduler.render import decisions_json, decisions_table
from scheduler.specs import JobDoc


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
    """Cancel a queued or running job and release its capacity (a served model: all its replicas)."""
    _connect(address, state_dir)
    from scheduler.runtime.serve.control import cancel_service

    if cancel_service(job):  # a served model's controller undeploys it and releases every replica
        out.print(f"{job}: cancelled (its controller undeploys the model and releases every replica)", markup=False)
        return
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

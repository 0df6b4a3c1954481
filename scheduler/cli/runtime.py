"""Runtime commands: the local cluster, the scheduler actor, the Ray job driver, job control."""

from __future__ import annotations

import shlex
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    print_decisions,
    progress,
    stage_progress,
)
from scheduler.decision import Decision
from scheduler.errors import AdmissionError, RuntimeUnavailable, SpecError, SpecErrors

if TYPE_CHECKING:  # the runtime and the spec loader are imported by the commands that use them
    from scheduler.runtime.cluster import ClusterInfo

PortOpt = Annotated[int, typer.Option("--metrics-port", min=1, max=65535, help="Scheduler metrics port.")]
class ForeignGroups(StrEnum):
    """What the reconciler does with placement groups on the pools that mcsched did not create."""

    REPORT = "report"
    EVICT = "evict"


ForeignOpt = Annotated[
    ForeignGroups, typer.Option("--foreign-groups", help="Placement groups on the pools that mcsched did not create: report, or evict them.")
]
WitnessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness-url",
        help="A witness's base URL the scheduler submits each signed checkpoint to (repeat for several) [default: $MCSCHED_WITNESS_URLS, else none].",
    ),
]


class NodeLayout(StrEnum):
    """How the clouds map to Ray worker nodes (``scheduler/runtime/nodes.py``)."""

    CLOUD = "cloud"
    REGION = "region"
    SINGLE = "single"


LayoutOpt = Annotated[
    NodeLayout,
    typer.Option("--nodes", help="Worker nodes: one per cloud, one per cloud x region, or none (the head carries every cloud)."),
]
UpPortOpt = Annotated[
    int | None, typer.Option("--metrics-port", min=1, max=65535, help="Scheduler metrics port on 127.0.0.1 [default: 9464 if free, else any free port].")
]


def _print_cluster(info: ClusterInfo, state: Path) -> None:
    """What `up` prints: the addresses, then Ray's own convention for reaching the Jobs API."""
    from scheduler.paths import state_dir as default_state

    out.print(f"Ray GCS:        {info.gcs_address}", markup=False)
    out.print(f"Ray dashboard:  {info.dashboard_url}  (Jobs API)", markup=False)
    out.print(f"metrics:        {info.metrics_url}", markup=False)
    if "serve" in info.ports:
        out.print(f"served models:  http://127.0.0.1:{info.ports['serve']}/v1  (Ray Serve, once a model is served)", markup=False)
    if info.prometheus_url:
        out.print(f"Prometheus:     {info.prometheus_url}", markup=False)
    out.print(f"state/ledger:   {info.state_dir}", markup=False)
    flag = "" if state == default_state().expanduser().resolve() else f" --state-dir {shlex.quote(str(state))}"
    out.print(f'For Ray\'s CLI, export these (or run: eval "$(mcsched env{flag})"):', markup=False)
    for line in info.export_lines():
        out.print(f"  {line}", markup=False)
    out.print("then:  ray job submit --working-dir deploy/examples -- python -m scheduler run job.yaml", markup=False)


@app.command("up")
def up_cmd(
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    state_dir: StateOpt = None,
    metrics_port: UpPortOpt = None,
    prometheus: Annotated[bool, typer.Option("--prometheus", help="Also start a local Prometheus scraping mcsched.")] = False,
    foreign_groups: ForeignOpt = ForeignGroups.REPORT,
    witness_url: WitnessOpt = None,
    nodes: LayoutOpt = NodeLayout.CLOUD,
) -> None:
    """Start a local Ray head (loopback only), a labelled Ray worker node per mock cloud, and the scheduler actor."""
    from scheduler.runtime.cluster import up
    from scheduler.runtime.nodes import Layout

    state = _state(state_dir)
    catalog, the_contract = load_config(clouds, contract)
    result = up(
        catalog, the_contract, state, metrics_port=metrics_port, foreign_groups=foreign_groups.value, witnesses=witness_url,
        log=lambda m: err.print(m, markup=False), layout=Layout(nodes.value),
    )  # fmt: skip
    info = result.info
    if not result.started:
        err.print(f"mcsched is already up in {state} (Ray at {info.gcs_address}); `mcsched down` first to restart it", markup=False)
    if prometheus:
        from scheduler.runtime.promlocal import ensure_prometheus

        info, started = ensure_prometheus(info)
        if not result.started:
            err.print("started a local Prometheus for it" if started else "its local Prometheus is already running", markup=False)
    _print_cluster(info, state)


@app.command("down")
def down_cmd(state_dir: StateOpt = None) -> None:
    """Stop what `mcsched up` started for this state dir (Ray head, scheduler actor, local Prometheus), nothing else."""
    from scheduler.runtime.cluster import down

    state = _state(state_dir)
    out.print(down(state).line(state), markup=False)


@app.command("env")
def env_cmd(
    state_dir: StateOpt = None,
    unset: Annotated[bool, typer.Option("--unset", help="Print the lines that undo them.")] = False,
) -> None:
    """Print the shell exports for Ray's CLI (RAY_ADDRESS, RAY_API_SERVER_ADDRESS, the token): eval "$(mcsched env)"."""
    from scheduler.runtime.cluster import ClusterInfo, alive

    state = _state(state_dir)
    if unset:
        print("unset " + " ".join(ClusterInfo("", "", "", str(state), "", auth_token_path="-").client_env()))
        return
    info = ClusterInfo.load(state)
    if info is None or not alive(info):
        raise RuntimeUnavailable(f"no running cluster in {state}: run `mcsched up` first")
    for line in info.export_lines():
        print(line)


@app.command("serve")
def serve_cmd(
    address: Annotated[str, typer.Option("--address", help="Existing Ray cluster (e.g. a KubeRay head).")],
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    configmap: Annotated[str | None, typer.Option("--configmap", help="Read catalog.yaml/contract.yaml from this ConfigMap (in-cluster).")] = None,
    state_dir: StateOpt = None,
    ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger path as seen by the actor's node.")] = None,
    metrics_port: PortOpt = 9464,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="0.0.0.0 inside a pod.")] = "127.0.0.1",
    supervise: Annotated[bool, typer.Option("--supervise", help="Stay up and re-create the actor if the cluster loses it.")] = False,
    foreign_groups: ForeignOpt = ForeignGroups.REPORT,
    witness_url: WitnessOpt = None,
) -> None:
    """Start only the scheduler actor against an existing Ray cluster."""
    from scheduler.runtime.actor import ensure_actor
    from scheduler.runtime.actor import supervise as supervise_actor
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
    args = (catalog.model_dump(mode="json", by_alias=True), the_contract.model_dump(mode="json", by_alias=True), ledger, metrics_port, metrics_host,
            foreign_groups.value, witness_url)  # fmt: skip
    connect(address)
    ensure_actor(*args)
    out.print(f"scheduler actor running on {address}; metrics on {metrics_host}:{metrics_port}", markup=False)
    if supervise:
        supervise_actor(lambda: ensure_actor(*args))


@app.command("run")
def run_cmd(
    job: Annotated[Path, typer.Argument(help="One Job YAML.")],
    address: AddressOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Place one job through the scheduler and run it on the chosen cloud (the Ray job driver)."""
    from scheduler.loading import load_files
    from scheduler.specs import JobDoc

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
    files: Annotated[list[Path], typer.Argument(help="Job files (YAML, or JSON Lines: .jsonl, one Job a line); each job becomes one Ray job.")],
    address: Annotated[str | None, typer.Option("--address", help="Ray Jobs API URL (default: this state dir's cluster, then RAY_API_SERVER_ADDRESS, then an http RAY_ADDRESS).")] = None,
    clouds: CatalogOpt = None,
    contract: ContractOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Submit jobs as Ray jobs (Jobs SDK); each runs `python -m scheduler run job.yaml` on the cluster."""
    import os

    from scheduler.loading import load_jobs
    from scheduler.runtime.cluster import ClusterInfo, alive, apply_client_env, no_cluster

    catalog, the_contract = load_config(clouds, contract)
    with stage_progress() as loading:
        docs = load_jobs(files, catalog, the_contract, loading)
    info = ClusterInfo.load(_state(state_dir))
    local = info if info is not None and alive(info) else None
    env_url = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS", "")
    url = address or (local.dashboard_url if local else None) or (env_url if env_url.startswith(("http://", "https://")) else None)
    if url is None:
        raise RuntimeUnavailable(no_cluster(_state(state_dir), "run `mcsched up` first or pass --address URL"))
    if local is not None and url.rstrip("/") == local.dashboard_url:
        apply_client_env(local)  # its token, before ray is imported
    from scheduler.runtime.jobs import submit_jobs

    with progress("submitting", len(docs), threshold=10) as advance:

        def submitted(name: str, sid: str) -> None:
            print(f"{name}\t{sid}", flush=True)
            advance(1)

        submit_jobs(docs, url, submitted)


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
    print_decisions(decisions, output, explain)


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
    served = _call("serving")
    assert isinstance(served, dict)
    if served.get(job, "serving") != "serving":  # its controller is gone: it is stopping or has ended (as a plain job cancelled twice says)
        raise AdmissionError(f"job {job!r} is already {served[job]}")
    row = _call("cancel", job)
    assert isinstance(row, dict)
    out.print(f"{job}: {row['outcome']}", markup=False)


@app.command("fault")
def fault_cmd(
    cloud: str,
    take_down: Annotated[bool, typer.Option("--down", help="Take the mock backend down (its Ray nodes stop).")] = False,
    bring_up: Annotated[bool, typer.Option("--up", help="Bring it back.")] = False,
    latency: Annotated[float | None, typer.Option("--extra-latency", min=0.0, help="Extra response seconds (slow holder); 0 clears.")] = None,
    address: AddressOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Inject a mock-backend fault (outage or slowness) into the running scheduler."""
    if take_down and bring_up:  # one flag each, so that both given is refused, not "the last one wins"
        raise fail("fault: --down and --up cannot be combined")
    down = True if take_down else False if bring_up else None
    if down is None and latency is None:
        raise fail("fault: say what to change: --down, --up and/or --extra-latency SECONDS")
    _connect(address, state_dir)
    info = _own_nodes(address, state_dir)
    if down is not None and info is not None:
        _node_fault(info, cloud, down)
    elif down is not None:  # a cluster without mcsched's worker nodes: the books' outage, as before
        _call("fault", cloud, not down, None)
    if latency is not None:
        _call("fault", cloud, None, latency)
    parts = ([] if down is None else ["down" if down else "up"]) + ([] if latency is None else [f"+{latency:g}s latency"])
    out.print(f"{cloud}: {', '.join(parts)}", markup=False)


#: How long ``fault``/``drain`` wait for the scheduler to see what happened to the nodes.
NODE_WAIT_SECONDS = 60.0


def _own_nodes(address: str | None, state_dir: Path | None) -> ClusterInfo | None:
    """The state dir's cluster record when it is the cluster joined and has worker nodes of its own."""
    from scheduler.runtime.cluster import ClusterInfo, alive, resolve_address

    state = _state(state_dir)
    info = ClusterInfo.load(state)
    if info is None or not info.nodes or not alive(info):
        return None
    resolved = resolve_address(address, state)
    return info if resolved is None or resolved.removeprefix("ray://") == info.gcs_address else None


def _node_fault(info: ClusterInfo, cloud: str, down: bool) -> None:
    """A real outage: stop the cloud's worker nodes (``--down``) or start them (``--up``), then
    wait until the scheduler, reading Ray's node table, has marked the cloud accordingly."""
    import time

    from scheduler.runtime.cluster import start_cloud_nodes, stop_cloud_nodes
    from scheduler.specs import CloudCatalog

    seen = _call("nodes")
    assert isinstance(seen, dict)
    if cloud not in seen["up"]:
        raise fail(f"fault: unknown cloud {cloud!r}")
    if down:
        stop_cloud_nodes(info, cloud)
    else:
        start_cloud_nodes(info, CloudCatalog.model_validate(_call("catalog")), cloud)
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while time.monotonic() < deadline:
        now = _call("nodes")
        assert isinstance(now, dict)
        if now["up"][cloud] is not down and not any(k.startswith(f"{cloud}/") for k in now["drift"]):
            return
        time.sleep(0.5)
    raise fail(f"fault: the scheduler did not see {cloud} {'down' if down else 'up'} within {NODE_WAIT_SECONDS:g}s")


@app.command("drain")
def drain_cmd(
    cloud: str,
    undo: Annotated[bool, typer.Option("--undo", help="Lift the cordon.")] = False,
    move: Annotated[
        bool, typer.Option("--move", help="Also move its movable work now (placed again through the ROFR gate); pinned work stays.")
    ] = False,
    address: AddressOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Cordon a cloud: no new placements on it; its running work finishes where it runs (or moves, with --move)."""
    if move and undo:
        raise fail("drain: --move and --undo cannot be combined (--move drains, --undo opens)")
    _connect(address, state_dir)
    result = _call("cordon", cloud, not undo, move)
    assert isinstance(result, dict)
    names, moved = result["cordoned"], result["moved"]
    out.print(f"{cloud}: {'cordoned' if not undo else 'open'} (cordoned: {', '.join(names) or 'none'})", markup=False)
    if moved:
        out.print(f"moved {len(moved)} job(s): {', '.join(moved)}", markup=False)

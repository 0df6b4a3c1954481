"""Capacity blocks on the local cluster: the scheduler actor buys and releases block nodes.

Each reconcile tick (``SchedulerService._reconcile_loop``, right after the node reconciler)
``Provisioner.plan`` reads the books and the GCS node table and says, through the pure
``scheduler.provision``:

- which bought nodes have **joined** (alive in the GCS: a ``block-joined`` event with the
  measured provisioning seconds), which **failed** to (their ``ray start`` exited, or no join
  within ``JOIN_TIMEOUT``) and which were **lost** after joining (dead in the GCS: a kill or
  ``mcsched fault --down``); each of the last two is a ``block-released`` event;
- which idle bought nodes to **release** (stopped gracefully: their raylet unregisters, the
  node reconciler shrinks the pool on its next tick);
- which blocks to **buy** for queued jobs (a ``block-purchased`` event with the quote, then a
  worker node started with ``workers.start_node``: the same ``ray start`` as ``mcsched up``'s
  nodes, one block of one pool, labelled ``block=<name>``).

Why our own calls and not Ray's autoscaler (``ray.autoscaler.sdk.request_resources``): the
autoscaler needs a node provider; its fake multi-node provider starts nodes itself inside
the head's monitor process, where mcsched's loopback switch, explicit ports and per-node temp
dirs (``workers.py``: what makes nodes start reliably on this shared host) are not ours to
set, and a request for resources cannot say *which* pool's block the ROFR gate chose. The
decision is the scheduler's (holder first, pins, quotes with provisioning time); the node is
started the way every other node of the cluster is. On KubeRay the same decisions scale the
pool's worker group (``kube/scaling.py``: ``KubeBlocks``, a ``BlockNodes`` that is also a
``NamesNodes``, since KubeRay names the pods).

The bought nodes are kept in ``blocks.json`` beside the ledger (name, pool, GPUs, when
bought), so a restarted actor still knows them; ``mcsched fault CLOUD --down`` and ``mcsched
down`` stop them with the cloud's other nodes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from scheduler.events import BlockJoined, BlockPurchased, BlockReleased, Event
from scheduler.pipeline.outcomes import DeclineReason, JobState
from scheduler.provision import BoughtNode, Group, Need, Offer, PoolNow, Purchase, plan_purchases, plan_releases
from scheduler.runtime.nodes import BLOCK, NodeType, block_node_type
from scheduler.runtime.nodewatch import RayNode

if TYPE_CHECKING:
    from scheduler.engine import Engine

log = logging.getLogger("mcsched.provisioner")
BLOCKS_FILE = "blocks.json"
#: A bought node not alive in the GCS this long after its purchase has failed (``workers.JOIN_TIMEOUT``).
JOIN_TIMEOUT = 120.0
#: Holder answers that no amount of capacity changes: its pools are not grown for such a job.
STATIC_DECLINES = frozenset({DeclineReason.GPU_TYPE_NOT_OFFERED, DeclineReason.GANG_TOO_LARGE, DeclineReason.BELOW_PRICE_FLOOR})


class BlockNodes(Protocol):
    """Starting and stopping block nodes (``LocalBlocks``, ``kube.scaling.KubeBlocks``; tests of
    the service pass a fake). ``start`` buys one block (``node`` names it, with its labels and one
    block of the pool as resources), ``stop`` releases bought block ``name``."""

    def start(self, node: NodeType) -> None: ...

    def stop(self, name: str) -> None: ...

    def running(self, name: str) -> bool: ...

    def busy_nodes(self) -> set[str]: ...


@runtime_checkable
class NamesNodes(Protocol):
    """A provider that does not choose its nodes' names (KubeRay's pods carry their group's
    ``block`` label): it says which Ray node is which bought block. ``identify`` returns the node
    table with ``block=<block name>`` on each node that stands for a bought block and no ``block``
    label elsewhere: the table a local cluster's nodes give as they are (``plan``). Its nodes
    may take longer to join (a pod waits to be scheduled and pulls its image): ``join_timeout``
    replaces ``JOIN_TIMEOUT``."""

    join_timeout: float

    def identify(self, nodes: list[RayNode], blocks: Sequence[Block]) -> list[RayNode]: ...


@dataclass
class Block:
    """A bought block's node, as ``blocks.json`` keeps it."""

    name: str
    cloud: str
    region: str
    gpu_type: str
    gpus: int
    job: str
    bought_at: float
    ready_at: float
    price: float
    start_seconds: float
    blocks: int = 1  # blocks of the purchase it belongs to (for the job's status line)
    joined_at: float | None = None
    node_id: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cloud, self.region, self.gpu_type)


@dataclass
class Step:
    """One tick's decisions: nodes to stop and to start, and what to record once done."""

    joined: list[tuple[Block, str, float]] = field(default_factory=list)  # block, node id, seconds
    gone: list[tuple[Block, str]] = field(default_factory=list)  # block, reason (failed, lost, idle)
    bought: list[tuple[Block, NodeType]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.joined or self.gone or self.bought)

    def events(self, at: float) -> list[Event]:
        out: list[Event] = []
        for b, _, seconds in self.joined:
            out.append(BlockJoined(at, b.name, b.cloud, b.region, b.gpu_type, b.gpus, round(seconds, 3)))
        for b, reason in self.gone:
            out.append(BlockReleased(at, b.name, b.cloud, b.region, b.gpu_type, b.gpus, reason))
        for b, _ in self.bought:
            out.append(BlockPurchased(at, b.name, b.cloud, b.region, b.gpu_type, b.gpus, b.job, b.price, b.start_seconds, b.ready_at))
        return out


class Provisioner:
    """The actor's bought blocks and the decisions of one tick (no I/O but ``blocks.json``)."""

    def __init__(self, nodes: BlockNodes, home: str) -> None:
        self.nodes = nodes
        self._file = Path(home) / BLOCKS_FILE
        self.serial = 0  # block nodes ever bought here: names are never reused (see ``_name``)
        self.blocks: dict[str, Block] = self._load()
        self.idle_since: dict[str, float] = {}
        self.released: dict[str, int] = {}  # cloud -> bought nodes stopped since this actor started

    # ------------------------------------------------------------------ bookkeeping

    def _load(self) -> dict[str, Block]:
        try:
            raw = json.loads(self._file.read_text())
            self.serial = int(raw["serial"])
            return {b["name"]: Block(**b) for b in raw["blocks"]}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s unreadable (%s): starting with no bought blocks", self._file, exc)
            return {}

    def _save(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"serial": self.serial, "blocks": [asdict(b) for b in self.blocks.values()]}, indent=1))
        os.replace(tmp, self._file)

    def in_flight(self, cloud: str | None = None) -> list[Block]:
        return [b for b in self.blocks.values() if b.joined_at is None and (cloud is None or b.cloud == cloud)]

    def buying(self, job: str, now: float) -> str | None:
        """The job's status line while a block bought for it is on its way."""
        mine = [b for b in self.in_flight() if b.job == job]
        if not mine:
            return None
        b = mine[0]
        return Purchase(job, b.key, len(mine), b.gpus, b.price, b.start_seconds, b.ready_at).text(now)

    def _name(self, cloud: str) -> str:
        """A new node name, never one used before: the GCS keeps a released node's row (dead) under
        its labels, which must not be taken for the new node's. Short: Ray's socket paths under the
        node's temp dir (``cluster.RAY_TEMP_MAX``) leave about 16 characters for it."""
        self.serial += 1
        name = f"{cloud}-b{self.serial}"
        return name if len(name) <= 16 else f"blk-{self.serial}"

    # ------------------------------------------------------------------ one tick

    def plan(
        self, engine: Engine, nodes: Iterable[RayNode], busy: set[str], managed: Iterable[str], now: float, cordoned: Iterable[str] = ()
    ) -> Step:
        """What this tick changes (numbered as in the module's docstring). Nothing is bought on a
        cloud that is down or cordoned (``mcsched drain``)."""
        closed = set(cordoned)
        step = Step()
        join_timeout = JOIN_TIMEOUT
        if isinstance(self.nodes, NamesNodes):
            nodes = self.nodes.identify(list(nodes), list(self.blocks.values()))
            join_timeout = self.nodes.join_timeout
        by_block: dict[str, RayNode] = {}
        for n in nodes:  # the alive row of a name first (a name is never reused, but be sure)
            name = n.labels.get(BLOCK)
            if name and (name not in by_block or n.alive):
                by_block[name] = n
        for b in list(self.blocks.values()):
            row = by_block.get(b.name)
            if b.joined_at is None:
                if row is not None and row.alive:
                    step.joined.append((b, row.node_id, now - b.bought_at))
                elif not self.nodes.running(b.name) or now - b.bought_at > join_timeout:
                    step.gone.append((b, "failed"))
            elif row is None or not row.alive:
                step.gone.append((b, "lost"))
        gone = {b.name for b, _ in step.gone}
        joined = {b.name: node_id for b, node_id, _ in step.joined}
        groups = self._groups(engine, set(managed), gone, joined)
        if not groups:
            return step
        pools = {
            (u.cloud, u.region, u.gpu_type): PoolNow(u.capacity, u.allocated, engine.backends[u.cloud].up and u.cloud not in closed)
            for u in engine.usage()
        }
        live = [b for b in self.blocks.values() if b.name not in gone and b.joined_at is not None and b.key in groups]
        bought = [BoughtNode(b.name, b.key, b.gpus, b.node_id in busy) for b in live]
        release, self.idle_since = plan_releases(bought, pools, groups, self.idle_since, now)
        step.gone += [(self.blocks[name], "idle") for name in release]
        for p in plan_purchases(self._needs(engine), pools, groups, now, engine.state.rank):
            for _ in range(p.blocks):
                name = self._name(p.key[0])
                b = Block(name, *p.key, p.block_gpus, p.job, now, p.ready_at, p.price, p.start_seconds, p.blocks)
                self.blocks[name] = b  # reserved now: the next name differs; dropped by ``done`` if not started
                step.bought.append((b, block_node_type(engine.catalog, *p.key, name)))
        return step

    def done(self, step: Step, started: Mapping[str, bool]) -> None:
        """The step carried out: ``started`` says which bought nodes did start."""
        for b, node_id, seconds in step.joined:
            b.joined_at, b.node_id = b.bought_at + seconds, node_id
        for b, _ in step.gone:
            self.blocks.pop(b.name, None)
            self.idle_since.pop(b.name, None)
            self.released[b.cloud] = self.released.get(b.cloud, 0) + 1
        for b, _ in step.bought:
            if not started.get(b.name):
                self.blocks.pop(b.name, None)
        self._save()

    def _groups(self, engine: Engine, managed: set[str], gone: set[str], joined: Mapping[str, str]) -> dict[tuple[str, str, str], Group]:
        """The growable pools of managed clouds, with the blocks bought so far."""
        out: dict[tuple[str, str, str], Group] = {}
        for backend in engine.catalog.spec.backends:
            if backend.name not in managed:
                continue
            for region in backend.regions:
                for gpu_type, spec in region.blocks.items():
                    key = (backend.name, region.name, gpu_type)
                    mine = [b for b in self.blocks.values() if b.key == key and b.name not in gone]
                    # a node that joined this tick counts as in flight: the books get its GPUs right after
                    up = sum(1 for b in mine if b.joined_at is not None)
                    out[key] = Group(
                        key, spec.gpus, spec.initial, spec.max, spec.provisioningSeconds, spec.idleReleaseSeconds, up, len(mine) - up
                    )
        return out

    def _needs(self, engine: Engine) -> list[Need]:
        """The queued jobs in queue order, each with the pools it may use (the holder's first)."""
        state = engine.state
        queued = sorted((r for r in state.jobs.values() if r.state is JobState.QUEUED), key=lambda r: r.key)
        out: list[Need] = []
        for rec in queued:
            cand = state.candidates(rec.job)
            holder_ok = cand.holder_skip is None and not (rec.rofr[0] == "declined" and rec.rofr[1] in STATIC_DECLINES)
            offers = [Offer(p, engine.backends[p.cloud].startup_seconds, cand.locality.get(p.region, 0), True) for p in cand.holder_pools if holder_ok]
            offers += [
                Offer(p, engine.backends[cloud].startup_seconds, cand.locality.get(p.region, 0)) for cloud, pools in cand.others for p in pools
            ]
            planned = rec.planned[1] if rec.planned is not None else None
            out.append(Need(rec.job.name, rec.job.gpus, tuple(offers), planned))
        return out


# ---------------------------------------------------------------------------------- the local cluster's nodes


class LocalBlocks:
    """Block nodes of the local cluster kept in ``state_dir`` (``mcsched up``): started as its other
    worker nodes are (``workers.start_node``), stopped gracefully (``workers.stop_node``)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self._raylet_seen: set[str] = set()  # block nodes whose raylet was running at some check

    def _info(self) -> Any:
        from scheduler.runtime.cluster import ClusterInfo

        info = ClusterInfo.load(Path(self.state_dir))
        if info is None:
            raise FileNotFoundError(f"no cluster recorded in {self.state_dir}")
        return info

    def _recorded(self) -> dict[str, Any]:
        from scheduler.runtime.workers import WorkerNode

        try:
            raw = json.loads((Path(self.state_dir) / NODES_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {n["name"]: WorkerNode.from_dict(n) for n in raw}

    def _record(self, nodes: Mapping[str, Any]) -> None:
        path = Path(self.state_dir) / NODES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([n.to_dict() for n in nodes.values()], indent=1))
        os.replace(tmp, path)

    def start(self, node: NodeType) -> None:
        from scheduler.runtime.cluster import head_env
        from scheduler.runtime.workers import start_node

        info = self._info()
        token = Path(info.auth_token_path) if info.auth_token_path else None
        env = head_env(Path(info.state_dir), info.ports, token)
        taken = set(info.ports.values())
        started = start_node(node, info.gcs_address, Path(info.temp_dir), env, Path(info.state_dir) / "nodes", taken)
        recorded = self._recorded()
        recorded[node.name] = started
        self._record(recorded)

    def stop(self, name: str) -> None:
        from scheduler.runtime.workers import stop_node

        recorded = self._recorded()
        node = recorded.pop(name, None)
        if node is not None:
            stop_node(node, self._info().temp_dir)
            self._record(recorded)

    def running(self, name: str) -> bool:
        """Its ``ray start`` runs and its raylet, once seen, still does. A raylet that crashed while
        starting (a port race on a loaded host) leaves ``ray start`` waiting ~30 s for it to
        register; seen gone, the node is failed now and another block can be bought at once."""
        from scheduler.runtime.workers import owned_process, raylet_of

        node = self._recorded().get(name)
        with contextlib.suppress(FileNotFoundError):
            temp_dir = self._info().temp_dir
            if node is None or owned_process(node, temp_dir) is None:
                return False
            if raylet_of(node, temp_dir) is not None:
                self._raylet_seen.add(name)
                return True
            return name not in self._raylet_seen
        return False

    def busy_nodes(self) -> set[str]:
        return busy_nodes()


def busy_nodes() -> set[str]:
    """Ray node ids that hold a bundle of a live placement group (one GCS read)."""
    import ray

    busy: set[str] = set()
    for info in ray.util.placement_group_table().values():
        if info.get("state") in ("CREATED", "RESCHEDULING", "PENDING"):
            busy.update(str(n) for n in (info.get("bundles_to_node_id") or {}).values() if n)
    return busy


#: The block nodes' process handles (``workers.WorkerNode``), beside ``cluster.json``: ``fault --down`` stops them too.
NODES_FILE = "block-nodes.json"


def block_nodes(state_dir: str) -> list[Any]:
    """The recorded block nodes of the cluster in ``state_dir`` (``workers.WorkerNode``)."""
    return list(LocalBlocks(state_dir)._recorded().values())

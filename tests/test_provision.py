"""Buying capacity in blocks (scheduler/provision.py): what to buy for which queued job, what to release."""

from __future__ import annotations

from scheduler.inventory import Pool
from scheduler.pipeline.policy import price_first, start_first
from scheduler.provision import BoughtNode, Group, Need, Offer, PoolNow, Purchase, plan_purchases, plan_releases

AZ = ("azure", "eastus", "H100")
OCI = ("oci", "us-ashburn-1", "H100")
AWS = ("aws", "us-east-1", "H100")
POOLS = {
    AZ: Pool(*AZ, "US", 16, 3.4, 0),
    OCI: Pool(*OCI, "US", 24, 2.9, 1),
    AWS: Pool(*AWS, "US", 24, 3.1, 2),
}
STARTUP = {"azure": 0.0, "oci": 30.0, "aws": 10.0}


def offers(*keys: tuple[str, str, str], holder: bool = True) -> tuple[Offer, ...]:
    """The job's candidate pools in the engine's order: the holder's (Azure) first when it may take the job."""
    return tuple(Offer(POOLS[k], STARTUP[k[0]], holder=holder and k[0] == "azure") for k in keys)


def group(key: tuple[str, str, str], gpus: int = 8, initial: int = 1, max: int = 3, bought: int = 0, in_flight: int = 0,
          provisioning: float = 20.0, idle: float = 60.0) -> Group:  # fmt: skip
    return Group(key, gpus, initial, max, provisioning, idle, bought, in_flight)


def books(**free: tuple[int, int]) -> dict[tuple[str, str, str], PoolNow]:
    """capacity, allocated per cloud."""
    keys = {"azure": AZ, "oci": OCI, "aws": AWS}
    return {keys[c]: PoolNow(cap, alloc) for c, (cap, alloc) in free.items()}


def test_a_job_bigger_than_every_pool_now_buys_a_block_of_the_holder_first() -> None:
    need = Need("big", 16, offers(AZ, OCI, AWS))
    got = plan_purchases([need], books(azure=(8, 0), oci=(8, 0), aws=(8, 0)), {AZ: group(AZ, max=2), OCI: group(OCI)}, 100.0, price_first)
    assert got == [Purchase("big", AZ, 1, 8, 3.4, 20.0, 120.0)]  # Azure is dearer than OCI, but it holds the ROFR
    assert got[0].text(105.0) == "buying 1 block of azure/eastus/H100, ready in ~15 s"


def test_other_clouds_are_ranked_by_the_contract_on_quotes_that_include_provisioning() -> None:
    need = Need("big", 16, offers(AZ, OCI, AWS))
    groups = {OCI: group(OCI, provisioning=20.0), AWS: group(AWS, provisioning=5.0)}  # the holder's pool cannot grow
    cheapest = plan_purchases([need], books(azure=(16, 8), oci=(8, 0), aws=(8, 0)), groups, 0.0, price_first)
    assert [(p.key, p.price, p.start_seconds) for p in cheapest] == [(OCI, 2.9, 50.0)]  # startup 30 + provisioning 20
    soonest = plan_purchases([need], books(azure=(16, 8), oci=(8, 0), aws=(8, 0)), groups, 0.0, start_first)
    assert [(p.key, p.start_seconds) for p in soonest] == [(AWS, 15.0)]  # 10 + 5 beats 30 + 20


def test_a_holder_that_may_not_take_the_job_is_not_grown_for_it() -> None:
    need = Need("big", 16, offers(AZ, OCI, holder=False))  # e.g. the holder declines this GPU type
    got = plan_purchases([need], books(azure=(8, 0), oci=(8, 0)), {AZ: group(AZ), OCI: group(OCI)}, 0.0, price_first)
    assert [p.key for p in got] == [OCI]


def test_pins_are_respected_a_pinned_job_buys_only_on_its_pool() -> None:
    api = Need("api", 16, offers(AZ))  # api-serving: its candidates are the holder's pools alone
    full = {AZ: group(AZ, max=2, bought=1), OCI: group(OCI)}  # Azure cannot grow past 2 blocks
    assert plan_purchases([api], books(azure=(16, 8), oci=(8, 0)), full, 0.0, price_first) == []
    eu = Need("eu", 16, offers(AWS, holder=False))  # a jurisdiction or region constraint leaves AWS only
    assert [p.key for p in plan_purchases([eu], books(aws=(8, 0), oci=(8, 0)), {OCI: group(OCI), AWS: group(AWS)}, 0.0, price_first)] == [AWS]


def test_no_purchase_when_the_job_can_start_now_or_its_planned_start_is_sooner_than_provisioning() -> None:
    groups = {OCI: group(OCI, provisioning=20.0)}
    assert plan_purchases([Need("fits", 8, offers(OCI))], books(oci=(8, 0)), groups, 0.0, price_first) == []
    soon = Need("soon", 16, offers(OCI), planned_start=15.0)  # its planned start in 15 s: a block needs 20 s
    assert plan_purchases([soon], books(oci=(8, 0)), groups, 0.0, price_first) == []
    later = Need("later", 16, offers(OCI), planned_start=300.0)
    assert [p.job for p in plan_purchases([later], books(oci=(8, 0)), groups, 0.0, price_first)] == ["later"]


def test_no_double_purchase_for_a_need_a_purchase_in_flight_covers() -> None:
    need = Need("big", 16, offers(OCI))
    first = plan_purchases([need], books(oci=(8, 0)), {OCI: group(OCI)}, 0.0, price_first)
    assert len(first) == 1
    again = plan_purchases([need], books(oci=(8, 0)), {OCI: group(OCI, in_flight=1)}, 1.0, price_first)
    assert again == []  # the next tick: the block in flight covers it
    two = plan_purchases([need, Need("other", 16, offers(OCI))], books(oci=(8, 0)), {OCI: group(OCI, max=4)}, 0.0, price_first)
    assert [(p.job, p.blocks) for p in two] == [("big", 1), ("other", 2)]  # the second job needs blocks of its own


def test_max_blocks_are_respected() -> None:
    need = Need("huge", 24, offers(OCI))
    assert [p.blocks for p in plan_purchases([need], books(oci=(8, 0)), {OCI: group(OCI, max=3)}, 0.0, price_first)] == [2]
    assert plan_purchases([need], books(oci=(8, 0)), {OCI: group(OCI, max=2)}, 0.0, price_first) == []  # 8 + 8 < 24
    assert plan_purchases([need], books(oci=(16, 0)), {OCI: group(OCI, max=3, bought=1, in_flight=1)}, 0.0, price_first) == []


def test_a_down_cloud_is_not_bought_from() -> None:
    need = Need("big", 16, offers(OCI, AWS))
    pools = {OCI: PoolNow(8, 0, up=False), AWS: PoolNow(8, 0)}
    assert [p.key for p in plan_purchases([need], pools, {OCI: group(OCI), AWS: group(AWS)}, 0.0, price_first)] == [AWS]


def test_an_idle_bought_node_is_released_after_the_timeout_never_one_with_work() -> None:
    groups = {OCI: group(OCI, idle=60.0, bought=2)}
    nodes = [BoughtNode("oci-b1", OCI, 8, busy=False), BoughtNode("oci-b2", OCI, 8, busy=True)]
    pools = books(oci=(24, 8))
    release, idle = plan_releases(nodes, pools, groups, {}, 100.0)
    assert release == [] and idle == {"oci-b1": 100.0}  # idle from now; the busy one never is
    release, idle = plan_releases(nodes, pools, groups, idle, 159.0)
    assert release == [] and idle == {"oci-b1": 100.0}
    release, idle = plan_releases(nodes, pools, groups, idle, 160.0)
    assert release == ["oci-b1"] and idle == {}


def test_a_node_whose_pool_work_would_not_fit_without_it_is_not_idle() -> None:
    groups = {OCI: group(OCI, idle=0.0, bought=2)}
    nodes = [BoughtNode("oci-b1", OCI, 8, busy=False), BoughtNode("oci-b2", OCI, 8, busy=False)]
    # 24 GPUs, 12 allocated: one block can go (16 left), not both (8 < 12)
    release, _ = plan_releases(nodes, books(oci=(24, 12)), groups, {}, 0.0)
    assert release == ["oci-b1"]
    release, idle = plan_releases(nodes, books(oci=(24, 20)), groups, {"oci-b1": -500.0}, 0.0)
    assert release == [] and idle == {}  # work returned: the idle clock restarts

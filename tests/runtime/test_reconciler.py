"""The reconciler's comparison of the books with Ray's gangs, without Ray."""

from __future__ import annotations

from scheduler.runtime.reconciler import Assignment, EnforcementTimer, Gang, compare, gang_name, parse_gang_name
from scheduler.runtime.resources import pool_resource

AZ = ("azure", "eastus", "H100")
OCI = ("oci", "us-ashburn-1", "H100")


def gang(job: str, attempt: int, pool: tuple[str, str, str], gpus: int, state: str = "CREATED", pg: str | None = None) -> Gang:
    return Gang(pg or f"pg-{job}-{attempt}", gang_name(job, attempt), state, {pool_resource(*pool): float(gpus), "CPU": 0.0})


def test_gang_names_round_trip_and_foreign_names_are_not_ours() -> None:
    assert parse_gang_name(gang_name("train-1.a", 12)) == ("train-1.a", 12)
    assert parse_gang_name("serve-replica") is None and parse_gang_name("mcsched:x:") is None


def test_at_rest_books_equal_ray_and_there_is_nothing_to_repair() -> None:
    plan = compare(
        {AZ: 16, OCI: 8},
        [Assignment("a", 1, "running", AZ, 16), Assignment("b", 3, "running", OCI, 8)],
        [gang("a", 1, AZ, 16), gang("b", 3, OCI, 8)],
        {"a": 100.0, "b": 100.0},
        now=101.0,
        grace=15.0,
    )
    assert plan.drift == {AZ: 0, OCI: 0} and plan.at_rest


def test_a_victim_still_holding_its_gang_is_negative_drift_and_its_gang_is_removed() -> None:
    # The books moved "train" from azure (attempt 1) to oci (attempt 2) and placed "api" on azure;
    # Ray still has train's azure gang and api's gang is pending behind it.
    plan = compare(
        {AZ: 8, OCI: 16},
        [Assignment("train", 2, "running", OCI, 16), Assignment("api", 1, "running", AZ, 8)],
        [gang("train", 1, AZ, 16), gang("api", 1, AZ, 8, state="PENDING")],
        {},
        now=0.0,
        grace=15.0,
    )
    assert plan.drift == {AZ: 8 - 16, OCI: 16}
    assert [g.name for g in plan.remove] == ["mcsched:train:1"]
    assert not plan.end and not plan.at_rest


def test_gangs_of_ended_or_unknown_jobs_are_removed_but_foreign_gangs_are_only_counted() -> None:
    foreign = Gang("pg-x", "serve-replica", "CREATED", {pool_resource(*AZ): 8.0})
    plan = compare({AZ: 0}, [], [gang("gone", 4, AZ, 8), foreign, gang("dead", 1, AZ, 8, state="REMOVED")], {}, 0.0, 15.0)
    assert [g.pg_id for g in plan.remove] == ["pg-gone-4"]
    assert plan.drift == {AZ: -16}  # the removed one held nothing; the other two hold 16


def test_a_job_is_ended_only_when_its_lease_expired_and_its_gang_is_gone() -> None:
    running = [Assignment("alive", 1, "running", AZ, 8), Assignment("ghost", 2, "running", AZ, 8), Assignment("queued-ghost", 5, "queued")]
    leases = {"alive": 0.0, "ghost": 0.0, "queued-ghost": 0.0, "fresh": 99.0}
    plan = compare({AZ: 16}, running, [gang("alive", 1, AZ, 8)], leases, now=100.0, grace=15.0)
    assert plan.end == ("ghost", "queued-ghost")
    # Within the grace period (an actor restart, drivers not yet back) nothing is ended.
    assert compare({AZ: 16}, running, [], leases, now=10.0, grace=15.0).end == ()
    # A job without a lease (placed through the API, no driver) is never ended here.
    assert compare({AZ: 8}, [Assignment("books-only", 1, "running", AZ, 8)], [], {}, 100.0, 15.0).end == ()


def test_a_stale_attempt_does_not_count_as_the_current_placements_gang() -> None:
    plan = compare({OCI: 8}, [Assignment("m", 3, "running", OCI, 8)], [gang("m", 2, AZ, 8)], {"m": 0.0}, 100.0, 15.0)
    assert plan.end == ("m",) and [g.name for g in plan.remove] == ["mcsched:m:2"]


def test_enforcement_timer_pairs_decisions_with_what_ray_did() -> None:
    t = EnforcementTimer()
    t.evicted("train", at=10.0)
    t.placed("api", 1, "preemption", at=10.0)
    t.placed("train", 2, "after-decline", at=10.0)  # a move: the job was evicted before
    t.placed("other", 1, "rofr-accepted", at=10.0)  # a first placement: not enforcement
    assert t.running("train", 1, 11.0) is None  # an old attempt never closes the new decision
    assert t.stopped("train", 10.5) == ("victim-stopped", 0.5)
    assert t.stopped("train", 11.0) is None  # observed once
    assert t.reserved("api", 1, 11.5) == ("preemptor-reserved", 1.5)
    assert t.running("api", 1, 12.0) == ("preemptor-running", 2.0)
    assert t.running("train", 2, 13.0) == ("moved-running", 3.0)
    assert t.running("other", 1, 13.0) is None
    t.placed("train", 3, "after-decline", at=20.0)
    t.ended("train")
    assert t.running("train", 3, 21.0) is None


def test_groups_on_a_pool_that_mcsched_did_not_create_are_foreign_serves_for_our_replicas_are_not() -> None:
    foreign = Gang("pg-x", "", "CREATED", {pool_resource(*AZ): 4.0})
    named = Gang("pg-y", "my-experiment", "PENDING", {pool_resource(*OCI): 2.0})
    replica = Gang("pg-s", "SERVE_REPLICA::mcsched-chat-r1#abc", "CREATED", {pool_resource(*AZ): 2.0})
    cpu_only = Gang("pg-c", "", "CREATED", {"CPU": 1.0})
    gone = Gang("pg-r", "", "REMOVED", {pool_resource(*AZ): 8.0})
    plan = compare({AZ: 2, OCI: 0}, [], [foreign, named, replica, cpu_only, gone], {}, now=1.0, grace=15.0)
    assert {g.pg_id for g in plan.foreign} == {"pg-x", "pg-y"} and not plan.at_rest
    assert plan.drift[AZ] == 2 - 6  # they hold real capacity: counted in the drift too

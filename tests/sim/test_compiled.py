"""The compiled replay (mypyc builds scheduler.invariants and scheduler.sim.simulator with the
core, scheduler/native.py) gives what its Python source gives: summaries, violations and
samples, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler import native
from tests.builds import run_both_builds

ROOT = Path(__file__).resolve().parents[2]

_REPLAYS = """
import dataclasses, hashlib, json, sys
sys.path.insert(0, ".")
from benchmarks.simulate import synthetic
from scheduler.loading import load_catalog, load_contract
from scheduler.native import core_build
from scheduler.paths import default_catalog, default_contract, examples_dir
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import summarise
jobs = synthetic(3_000)
out = {"build": core_build()}
tight = examples_dir() / "sim" / "catalog-azure-tight.yaml"
for name, path, policy in (("contract", default_catalog(), "contract"), ("cheapest", tight, "cheapest")):
    catalog = load_catalog(path)
    sim = Simulation(catalog, load_contract(default_contract(), catalog), policy)
    sim.add_jobs(jobs)
    cloud, region = catalog.spec.backends[0].name, catalog.spec.backends[0].regions[0].name
    sim.add_capacity([(20_000.0, (cloud, region, "H100"), 8), (40_000.0, (cloud, region, "H100"), 64)])
    sim.run()
    digest = hashlib.sha256()
    digest.update(json.dumps(summarise(sim, {"H100"}), sort_keys=True).encode())
    digest.update(repr([(v.seq, v.rule, v.job, v.message) for v in sim.rec.checker.violations]).encode())
    digest.update(repr([dataclasses.asdict(s) for s in sim.samples]).encode())
    out[name] = {"violations": len(sim.rec.checker.violations), "events": sim.rec.events, "digest": digest.hexdigest()}
print(json.dumps(out))
"""


def test_the_compiled_replay_gives_what_its_source_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 synthetic jobs with a capacity cut and its return, under the contract and under a policy that breaks it."""
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    compiled, source = run_both_builds(_REPLAYS, {"PYTHONHASHSEED": "0"})  # the samples' spend is keyed through a set
    assert compiled["contract"]["violations"] == 0 < compiled["cheapest"]["violations"]
    assert {k: v for k, v in compiled.items() if k != "build"} == {k: v for k, v in source.items() if k != "build"}

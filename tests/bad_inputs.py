"""A corpus of hostile and broken inputs; each must give a one-line error and exit 2.

Each case names what it breaks and a fragment the error must contain, so a regression
that still fails but for the wrong reason (or with a traceback) is caught.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from scheduler.paths import default_catalog, default_contract


@dataclass(frozen=True)
class BadCase:
    id: str
    target: str  # job | catalog | contract
    content: bytes
    expect: str


def _job(**spec: Any) -> dict[str, Any]:
    base = {"class": "training", "gpus": 8, "gpuType": "H100"}
    base.update(spec)
    return {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": "bad-job"}, "spec": base}


def _y(*docs: Any) -> bytes:
    return yaml.safe_dump_all(list(docs), sort_keys=False).encode()


def _without(d: dict[str, Any], *path: str) -> dict[str, Any]:
    d = copy.deepcopy(d)
    cur = d
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return d


def _set(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    cur = d
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return d


def _cases() -> list[BadCase]:
    cases: list[BadCase] = []

    def job(id: str, content: bytes, expect: str) -> None:
        cases.append(BadCase(f"job-{id}", "job", content, expect))

    # --- wrong values, field by field
    for v, why in [
        (-1, "greater than or equal to 1"),
        (0, "greater than or equal to 1"),
        (100000, "less than or equal"),
        ("8", "valid integer"),
        (8.5, "valid integer"),
        (None, "valid integer"),
        (True, "valid integer"),
        ([8], "valid integer"),
        (3000, "can never fit"),
        (10**30, "less than or equal"),
    ]:
        job(f"gpus-{v!r}", _y(_job(gpus=v)), why)
    for v, why in [
        ("TPUv5", "unknown GPU type"),
        ("", "must be a GPU type"),
        (123, "valid string"),
        (None, "valid string"),
        ("h100", "unknown GPU type"),
        ("H100 ", "no spaces"),
    ]:
        job(f"gpuType-{v!r}", _y(_job(gpuType=v)), why)
    for v in ["batch", "Training", "", None, 3, "api_serving"]:
        job(f"class-{v!r}", _y(_job(**{"class": v})), "spec.class")
    for v, why in [
        (5000, "less than or equal"),
        (-5000, "greater than or equal"),
        ("high", "valid integer"),
        (1.5, "valid integer"),
    ]:
        job(f"priority-{v!r}", _y(_job(priority=v)), why)
    for v, why in [(0, "greater than 0"), (-1, "greater than 0"), (100000, "less than or equal"), ("long", "valid number"),
                   (float("nan"), "finite number"), (float("inf"), "finite number")]:  # not "less than or equal to 8760"
        job(f"duration-{v!r}", _y(_job(durationHours=v)), why)
    for v, why in [
        (["mars-1"], "unknown region"),
        ([], "at least 1"),
        ("eastus", "valid list"),
        ([1], "valid string"),
        (["us-ashburn-1", "nowhere-9"], "unknown region"),
    ]:
        job(f"regions-{v!r}", _y(_job(regions=v)), why)
    for v, why in [
        (["oci"], "must include the ROFR holder"),
        (["ibm"], "unknown cloud"),
        ([], "at least 1"),
        ("azure", "valid list"),
    ]:
        job(f"clouds-{v!r}", _y(_job(clouds=v)), why)
    for v, why in [("us", "upper-case jurisdiction code"), ("CN", "no allowed cloud/region"), (7, "valid string")]:
        job(f"jurisdiction-{v!r}", _y(_job(jurisdiction=v)), why)
    job("both-bodies", _y(_job(entrypoint="echo hi", workload={"steps": 1})), "not both")
    job("empty-entrypoint", _y(_job(entrypoint="")), "at least 1 character")
    job("workload-steps-0", _y(_job(workload={"steps": 0})), "greater than or equal to 1")
    job("workload-unknown", _y(_job(workload={"steps": 1, "turbo": True})), "unknown field")
    job("workload-fail-0", _y(_job(workload={"failAtStep": 0})), "greater than or equal to 1")
    # --- api exclusivity
    job("api-on-oci", _y(_job(**{"class": "api-serving", "clouds": ["oci"]})), "pinned to azure")
    job("api-on-azure-and-aws", _y(_job(**{"class": "api-serving", "clouds": ["azure", "aws"]})), "pinned to azure")
    job("api-region-off-azure", _y(_job(**{"class": "api-serving", "regions": ["us-ashburn-1"]})), "no allowed cloud/region")
    job(
        "api-stargate-region",
        _y(_job(**{"class": "api-serving", "regions": ["abilene-tx"], "gpuType": "GB200"})),
        "no allowed cloud/region",
    )
    # --- served models (spec.serve)
    def served(**serve: Any) -> dict[str, Any]:
        return _without(_job(**{"class": "api-serving", "serve": {"model": "llama", "gpusPerReplica": 8, **serve}}), "spec", "gpus")

    job("serve-on-training", _y(_set(served(), ("spec", "class"), "training")), "only for api-serving")
    job("serve-gpus-mismatch", _y(_set(served(replicas={"min": 1, "max": 3}), ("spec", "gpus"), 16)), "must equal serve.replicas.max")
    job("serve-min-over-max", _y(served(replicas={"min": 3, "max": 2})), "max (2) must be >= min (3)")
    job("serve-zero-min", _y(served(replicas={"min": 0, "max": 2})), "greater than or equal to 1")
    job("serve-model-spaces", _y(served(model="my model")), "must be a model name")
    job("serve-gpus-string", _y(served(gpusPerReplica="8")), "valid integer")
    job("serve-too-large-replica", _y(served(gpusPerReplica=1024)), "can never fit")
    job("serve-target-zero", _y(served(targetOngoingRequests=0)), "greater than 0")
    job("serve-with-workload", _y(_set(served(), ("spec", "workload"), {"steps": 1})), "drop entrypoint/workload")
    job("serve-unknown-field", _y(served(autoscaler="ray")), "unknown field")
    # api-serving jobs the holder can never accept are refused, not queued forever
    job("api-declined-gpu-type", _y(_job(**{"class": "api-serving", "gpuType": "MI300X"})), "never accepts")
    job("only-holder-declines", _y(_job(gpuType="MI300X", regions=["southcentralus"])), "only azure could ever host it")
    job("api-larger-than-azure", _y(_job(**{"class": "api-serving", "gpus": 1024})), "can never fit")
    job("api-larger-than-region", _y(_job(**{"class": "api-serving", "gpus": 128, "regions": ["japaneast"]})), "can never fit")
    # --- structure
    for where in ["spec", "metadata", "top"]:
        d = _job()
        (d["spec"] if where == "spec" else d["metadata"] if where == "metadata" else d)["extra"] = 1
        job(f"unknown-field-{where}", _y(d), "unknown field")
    job("placement-field", _y(_job(placement={"cloud": "oci"})), "unknown field")
    job("rofr-skip-field", _y(_job(skipRofr=True)), "unknown field")
    for path in [
        ("spec",),
        ("metadata",),
        ("spec", "gpus"),
        ("spec", "class"),
        ("spec", "gpuType"),
        ("metadata", "name"),
        ("apiVersion",),
        ("kind",),
    ]:
        job(
            "missing-" + ".".join(path),
            _y(_without(_job(), *path)),
            "required field is missing",
        )
    for v, why in [
        ("x" * 300, "at most 63"),
        ("UPPER", "lowercase DNS-style name"),
        ("bad name", "lowercase DNS-style name: a-z, 0-9"),
        ("", "lowercase DNS-style name"),
        ("-lead", "lowercase DNS-style name"),
        ("ünï", "lowercase DNS-style name"),
        (42, "valid string"),
    ]:
        job(f"name-{str(v)[:10]!r}", _y(_set(_job(), ("metadata", "name"), v)), why)
    job("apiversion", _y(_set(_job(), ("apiVersion",), "v2")), "apiVersion")
    job("kind-typo", _y(_set(_job(), ("kind",), "Jobb")), "unknown kind")
    job("top-level-list", b"- a\n- b\n", "expected a mapping")
    job("top-level-scalar", b"hello\n", "expected a mapping")
    job("empty-file", b"", "no YAML documents")
    job("only-comments", b"# nothing\n", "no YAML documents")
    job("duplicate-names", _y(_job(), _job()), "duplicate job name")
    job(
        "contract-not-job",
        _y({"apiVersion": "mcsched.io/v1", "kind": "Contract", "metadata": {"name": "c"}}),
        "expected kind Job",
    )
    # --- broken YAML and encodings
    job("yaml-unclosed-flow", b"spec: [\n", "invalid YAML")
    job("yaml-unclosed-quote", b'metadata: {name: "x}\n', "invalid YAML")
    job("yaml-tab-indent", b"spec:\n\tgpus: 8\n", "invalid YAML")
    job("yaml-bad-indent", b"spec:\n  gpus: 8\n gpuType: H100\n", "invalid YAML")
    job("yaml-duplicate-doc-marker-garbage", b"---\n: : :\n", "invalid YAML")
    job("non-utf8", b"apiVersion: mcsched.io/v1\nkind: Job\nmetadata: {name: \xff\xfe}\n", "not valid UTF-8")
    job("latin1", "metadata: {name: caf\u00e9}\n".encode("latin-1"), "not valid UTF-8")
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode()
        for i in range(8)
    )
    job("alias-bomb", bomb, "aliases")
    job("simple-alias", b"x: &a 1\ny: *a\n", "aliases")
    job("deep-nesting", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "invalid YAML")
    job("python-tag", b"!!python/object:os.system {}\n", "invalid YAML")

    # --- catalogs
    catalog = yaml.safe_load(default_catalog().read_text())

    def cat(id: str, doc: Any, expect: str) -> None:
        cases.append(BadCase(f"catalog-{id}", "catalog", _y(doc) if not isinstance(doc, bytes) else doc, expect))

    cat("negative-gpus", _set(catalog, ("spec", "backends", 0, "regions", 0, "gpus", "H100"), -8), "greater than or equal to 0")
    cat("gpus-string", _set(catalog, ("spec", "backends", 0, "regions", 0, "gpus", "H100"), "lots"), "valid integer")
    cat("price-missing", _set(catalog, ("spec", "backends", 0, "prices"), {"H100": 3.0}), "without a price")
    cat("price-zero", _set(catalog, ("spec", "backends", 0, "prices", "H100"), 0), "greater than 0")
    cat("price-absurd", _set(catalog, ("spec", "backends", 0, "prices", "H100"), 10**6), "less than or equal")
    cat("price-nan", _set(catalog, ("spec", "backends", 0, "prices", "H100"), float("nan")), "finite number")
    cat("latency-negative", _set(catalog, ("spec", "backends", 1, "latencySeconds"), -1), "greater than or equal to 0")
    cat("up-string", _set(catalog, ("spec", "backends", 1, "up"), "yes"), "valid boolean")
    cat("duplicate-backend", _set(catalog, ("spec", "backends", 1, "name"), "azure"), "duplicate backend")
    cat("duplicate-region", _set(catalog, ("spec", "backends", 0, "regions", 1, "name"), "eastus"), "duplicate region")
    cat("stargate-outside-us", _set(catalog, ("spec", "backends", 2, "regions", 0, "jurisdiction"), "EU"), "restricted to US")
    cat(
        "reserve-fraction-1",
        _set(catalog, ("spec", "backends", 0, "holderRules", "reserveForApiServingFraction"), 1.0),
        "less than 1",
    )
    cat("unknown-backend-field", _set(catalog, ("spec", "backends", 0, "discount"), 0.5), "unknown field")
    cat("no-backends", _set(catalog, ("spec", "backends"), []), "at least 1")
    cat("no-regions", _set(catalog, ("spec", "backends", 3, "regions"), []), "at least 1")
    cat("jurisdiction-lower", _set(catalog, ("spec", "backends", 3, "regions", 0, "jurisdiction"), "us"), "upper-case jurisdiction code")
    cat("two-catalogs", _y(catalog, catalog), "expected exactly one CloudCatalog")
    blocks = ("spec", "backends", 0, "regions", 0, "blocks")  # eastus: 512 H100, 288 GB200
    cat("block-not-a-bundle-multiple", _set(catalog, blocks, {"GB200": {"gpus": 12, "max": 24}}), "must be a multiple of 8")
    cat("blocks-short-of-the-pool", _set(catalog, blocks, {"H100": {"gpus": 8, "max": 3}}), "must equal the pool's count")
    cat("not-yaml", b"{{{", "invalid YAML")

    # --- contracts
    contract = yaml.safe_load(default_contract().read_text())

    def con(id: str, doc: Any, expect: str) -> None:
        cases.append(BadCase(f"contract-{id}", "contract", _y(doc) if not isinstance(doc, bytes) else doc, expect))

    con("unknown-holder", _set(_set(contract, ("spec", "rofr", "holder"), "ibm"), ("spec", "pins", "api-serving"), ["ibm"]), "unknown holder")
    # without written pins, they derive from the holder: its typo is one error, not two (no "unknown cloud" in a pin never written)
    con("holder-typo-pins-derived", _without(_set(contract, ("spec", "rofr", "holder"), "azur"), "spec", "pins"), "unknown holder 'azur'")
    con("holder-null", _set(contract, ("spec", "rofr", "holder"), None), "spec.rofr.holder")
    con("holder-empty", _set(contract, ("spec", "rofr", "holder"), ""), "spec.rofr.holder")
    con("window-zero", _set(contract, ("spec", "rofr", "windowSeconds"), 0), "greater than 0")
    con("window-negative", _set(contract, ("spec", "rofr", "windowSeconds"), -30), "greater than 0")
    con("window-string", _set(contract, ("spec", "rofr", "windowSeconds"), "30s"), "valid number")
    con("mode-typo", _set(contract, ("spec", "rofr", "mode"), "first_look"), "spec.rofr.mode")
    con("onlapse-typo", _set(contract, ("spec", "rofr", "onLapse"), "accept"), "spec.rofr.onLapse")
    con("pin-unknown-cloud", _set(contract, ("spec", "pins", "inference"), ["azure", "ibm"]), "unknown cloud")
    # --- API exclusivity is the contract's clause: it cannot be configured away
    con("api-pin-replaced", _set(contract, ("spec", "pins"), {"training": ["azure"]}), "API exclusivity")
    con("api-pin-dropped", _set(contract, ("spec", "pins"), {}), "API exclusivity")
    con("api-pin-elsewhere", _set(contract, ("spec", "pins", "api-serving"), ["oci"]), "API exclusivity")
    con("api-pin-widened", _set(contract, ("spec", "pins", "api-serving"), ["azure", "oci"]), "API exclusivity")
    con("spill-ranking-typo", _set(contract, ("spec", "scoring"), {"spill": "cheapest"}), "spec.scoring.spill")
    con("pin-unknown-class", _set(contract, ("spec", "pins", "batch"), ["oci"]), "spec.pins")
    con("pin-empty", _set(contract, ("spec", "pins", "api-serving"), []), "at least 1")
    con("preemption-string", _set(contract, ("spec", "preemption", "enabled"), "on"), "valid boolean")
    con("unknown-rofr-field", _set(contract, ("spec", "rofr", "exclusive"), True), "unknown field")
    con("catalog-as-contract", _y(catalog), "expected exactly one Contract")
    return cases


CASES = _cases()

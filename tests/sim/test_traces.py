"""Trace readers: the real traces reproduce their README's statistics; broken input is clear."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from pathlib import Path

import pytest

from scheduler.errors import TraceError
from scheduler.sim.traces import (
    ReadOptions,
    ReadStats,
    ReplicaModel,
    parse_columns,
    read_alibaba,
    read_azure_llm,
    read_csv,
    read_spot_dir,
    read_trace,
)
from tests.sim.shared import TRACES
from tests.sim.shared import needs_traces as needs

ALIBABA = TRACES / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"


@needs
def test_alibaba_reader_reproduces_the_readme_statistics() -> None:
    import csv

    with ALIBABA.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8152
    assert Counter(r["num_gpu"] for r in rows) == {"0": 1088, "1": 6989, "2": 16, "4": 15, "8": 44}
    gpu = [r for r in rows if r["num_gpu"] != "0"]
    frac = [int(r["gpu_milli"]) for r in gpu if int(r["gpu_milli"]) < 1000]
    assert round(100 * len(frac) / len(gpu), 1) == 43.6 and statistics.median(frac) == 470
    assert sum(1 for r in rows if not r["scheduled_time"]) == 897
    assert sum(1 for r in rows if r["pod_phase"] == "Running") == 5193
    span_days = (max(int(r["creation_time"]) for r in rows) - min(int(r["creation_time"]) for r in rows)) / 86400
    assert round(span_days) == 149
    stats = ReadStats()
    jobs = read_alibaba(ALIBABA, stats=stats)
    assert stats.rows == 8152 and stats.skipped["no GPU"] == 1088
    assert len(jobs) + stats.skipped["never scheduled"] == 7064  # every GPU pod is a job or a counted skip
    assert all(j.gpus >= 1 for j in jobs) and jobs == sorted(jobs, key=lambda j: j.arrival)
    assert {j.cls for j in jobs} == {"api-serving", "training", "inference"}
    rules = {r.rule: r.effect for r in stats.rules}
    assert rules["qos LS -> api-serving"] == "3,590 jobs, 81.0% of replayed GPU-hours"  # the skew the report states
    assert rules["fractional GPUs rounded up to whole GPUs (a gang holds whole GPUs)"].endswith("(+15.8%)")
    assert "gpu_spec any -> H100 (the trace names no GPU model)" in rules
    remapped = read_trace(ALIBABA, "alibaba-openb", ReadOptions(class_map="LS=inference", gpu_map="any=H200", load=10))
    assert {j.cls for j in remapped.jobs} == {"training", "inference"} and remapped.gpu_types == {"H200"}
    assert remapped.jobs[-1].arrival == jobs[-1].arrival / 10 and "compressed 10x" in remapped.load_rule


@needs
@pytest.mark.parametrize(("name", "count", "rate", "cv"), [("conv", 19366, 5.53, None), ("code", 8819, 2.57, 13.2)])
def test_azure_llm_trace_statistics(name: str, count: int, rate: float, cv: float | None) -> None:
    import csv
    from datetime import datetime

    path = TRACES / "azure-llm-inference-2023" / f"AzureLLMInferenceTrace_{name}.csv"
    with path.open() as fh:
        ts = [datetime.fromisoformat(r["TIMESTAMP"][:26]).timestamp() for r in csv.DictReader(fh)]
    assert len(ts) == count
    assert round(count / (max(ts) - min(ts)), 2) == pytest.approx(rate, abs=0.01)
    if cv is not None:
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert round(statistics.pstdev(gaps) / statistics.mean(gaps), 1) == cv
    stats = ReadStats()
    jobs = read_azure_llm(path, stats=stats)
    assert stats.rows == count and jobs and all(j.cls == "api-serving" and j.fixed_end for j in jobs)
    heavier = read_azure_llm(path, load=10)
    assert sum(j.duration for j in heavier) > 5 * sum(j.duration for j in jobs)  # the load factor scales the demand


@needs
def test_azure_llm_reader_accepts_the_trace_directory() -> None:
    stats = ReadStats()
    jobs = read_azure_llm(TRACES / "azure-llm-inference-2023", stats=stats)
    assert stats.rows == 19366 + 8819 and jobs
    assert "from 2 file(s)" in stats.rules[0].rule


@needs
def test_spot_traces_statistics() -> None:
    traces = {t.zone: t for t in read_spot_dir(TRACES / "spot-availability")}
    assert len(traces) == 9
    assert round(traces["us-east-1a"].availability * 100, 1) == 16.7
    assert round(traces["us-west-2b"].availability * 100, 1) == 90.5
    assert min(t.availability for t in traces.values()) == traces["us-east-1a"].availability
    assert all(round(t.days, 1) == 45.5 for t in traces.values())


def write(tmp: Path, text: str) -> Path:
    p = tmp / "t.csv"
    p.write_text(text)
    return p


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "submit_time,num_gpu,dur,kind\n10,8,3600,training\n5,1,60,api-serving\n")
    jobs = read_csv(p, parse_columns("arrival=submit_time,gpus=num_gpu,duration=dur,class=kind"))
    assert [(j.arrival, j.gpus, j.cls) for j in jobs] == [(5.0, 1, "api-serving"), (10.0, 8, "training")]


def test_csv_priority_column_class_map_and_gpu_map(tmp_path: Path) -> None:
    p = write(tmp_path, "t,n,d,k,p,g\n0,8,60,batch,900,A100\n1,8,60,web,,A100\n2,1,60,web,x,A100\n")
    opts = ReadOptions(columns="arrival=t,gpus=n,duration=d,class=k,priority=p,gpu_type=g", class_map="batch=training,web=api-serving",
                       gpu_map="A100=H100", skip_bad_rows=True)
    trace = read_trace(p, "csv", opts)
    assert [(j.cls, j.priority, j.gpu_type) for j in trace.jobs] == [("training", 900, "H100"), ("api-serving", None, "H100")]
    assert trace.stats.skipped == {"bad p": 1}
    rules = {r.rule: r.effect for r in trace.stats.rules}
    assert rules["class web -> api-serving"].startswith("1 jobs") and rules["priority column 'p' overrides the class priority"] == "1 jobs"
    with pytest.raises(TraceError, match=r"t\.csv:4: p: must be a whole number -1000..1000"):
        read_trace(p, "csv", ReadOptions(columns=opts.columns, class_map=opts.class_map))
    with pytest.raises(TraceError, match="unknown value 'gpu'"):
        read_trace(p, "csv", ReadOptions(columns=opts.columns, class_map="batch=gpu"))


def test_azure_llm_replicas_follow_token_work_by_hand(tmp_path: Path) -> None:
    # one replica prefills 1,000 tok/s and decodes 100 tok/s; windows of 60 s at 50%: a window
    # holds 30 replica-seconds of work per replica. Window 0: 2 requests x (1000/1000 + 100/100)
    # = 4 s -> 1 replica. Window 1: 20 x 2 s = 40 s -> 2 replicas. Window 2: nothing -> min 1.
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens", "2023-11-16 18:00:00.0,1000,100", "2023-11-16 18:00:30.0,1000,100"]
    rows += [f"2023-11-16 18:01:{i:02d}.5,1000,100" for i in range(20)]
    rows += ["2023-11-16 18:02:10.0,0,0"]
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "a.csv").write_text("\n".join(rows) + "\n")
    model = ReplicaModel.parse("prefillTokensPerSecond=1000,decodeTokensPerSecond=100,windowSeconds=60,targetUtilisation=0.5,gpusPerReplica=4")
    jobs = read_azure_llm(tmp_path / "reqs", model=model)
    assert [(j.name, j.arrival, j.duration, j.gpus) for j in jobs] == [("api-replica-1", 0.0, 180.0, 4), ("api-replica-2", 60.0, 60.0, 4)]
    doubled = read_azure_llm(tmp_path / "reqs", model=model, load=2.0)  # window 1: 80 s -> 3 replicas
    assert sorted(j.duration for j in doubled) == [60.0, 60.0, 180.0]
    with pytest.raises(TraceError, match="--replica: bad setting"):
        ReplicaModel.parse("tokens=3")


def test_missing_columns_name_the_file_and_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "submit_time,num_gpu\n1,1\n")
    with pytest.raises(TraceError, match=r"t\.csv: missing column\(s\) duration"):
        read_trace(p, "csv", ReadOptions(columns="arrival=submit_time,gpus=num_gpu"))


def test_bad_rows_stop_at_the_first_with_its_line_or_are_counted(tmp_path: Path) -> None:
    p = write(tmp_path, "arrival,gpus,duration\n1,8,10\n2,-3,10\n3,x,10\n4,2,0\n5,1,nan\n6,2,5\n")
    with pytest.raises(TraceError, match=r"t\.csv:3: gpus: must be a whole number"):
        read_trace(p, "csv")
    trace = read_trace(p, "csv", ReadOptions(skip_bad_rows=True))
    stats = trace.stats
    assert [j.arrival for j in trace.jobs] == [1.0, 6.0]
    assert stats.skipped == {"bad gpus": 2, "bad duration": 2} and stats.rows == 6


def test_bad_mapping_format_and_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="bad mapping"):
        parse_columns("arrival")
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace(tmp_path / "x.csv", "parquet")
    with pytest.raises(TraceError, match="no \\*\\.csv request files"):
        read_trace(tmp_path, "azure-llm")
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.csv", "csv")
    (tmp_path / "spot").mkdir()
    with pytest.raises(TraceError, match=r"no \*\.json"):
        read_spot_dir(tmp_path / "spot")
    (tmp_path / "spot" / "z_1.json").write_text('{"metadata": {}}')
    with pytest.raises(TraceError, match="not a spot-availability file"):
        read_spot_dir(tmp_path / "spot")


OPENB = """name,num_gpu,gpu_milli,qos,creation_time,deletion_time,scheduled_time,gpu_spec
p1,1,500,LS,0,3610,10,
p2,2,1000,BE,100,7300,100,V100M32
p3,1,250,Burstable,200,3800,200,
p4,0,0,Guaranteed,300,400,300,
p5,1,1000,BE,400,500,,
"""


@pytest.mark.parametrize("fmt", ["alibaba-openb", "csv"])
def test_a_short_row_is_one_line_and_skipped_on_request(tmp_path: Path, fmt: str) -> None:
    """A row with fewer fields than the header: its missing fields are empty. The openb reader
    raised KeyError (a traceback, with --skip-bad-rows too); the generic reader said "empty"."""
    p = tmp_path / "t.csv"
    p.write_text(OPENB + "p6\n" if fmt == "alibaba-openb" else "name,arrival,gpus,duration\na,0,8,60\nb,1\n")
    line = 7 if fmt == "alibaba-openb" else 3
    field = "num_gpu" if fmt == "alibaba-openb" else "gpus"
    with pytest.raises(TraceError) as exc:
        read_trace(p, fmt)
    assert str(exc.value).startswith(f"{p}:{line}: ") and "empty" in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
    trace = read_trace(p, fmt, ReadOptions(skip_bad_rows=True))
    assert trace.stats.examples[-1].startswith(f"t.csv:{line}: ") and len(trace.jobs) == (3 if fmt == "alibaba-openb" else 1)
    if fmt == "alibaba-openb":
        assert str(exc.value) == f"{p}:{line}: {field}: empty (use --skip-bad-rows to count and skip)"


def test_openb_mapping_rules_and_their_effect_by_hand(tmp_path: Path) -> None:
    # p1: 0.5 GPU x 3,600 s (LS); p2: 2 GPUs x 7,200 s (BE, V100M32); p3: 0.25 GPU x 3,600 s
    # (Burstable); p4 has no GPU, p5 was never scheduled: both skipped and counted.
    # Exact GPU-hours 0.5 + 4 + 0.25 = 4.75; whole GPUs 1 + 4 + 1 = 6: +26.3%, 2 of 3 rounded.
    p = tmp_path / "openb.csv"
    p.write_text(OPENB)
    trace = read_trace(p, "alibaba-openb", ReadOptions(load=2))
    assert [(j.name, j.arrival, j.gpus, j.duration, j.cls, j.gpu_type) for j in trace.jobs] == [
        ("p1", 0.0, 1, 3600.0, "api-serving", "H100"),
        ("p2", 50.0, 2, 7200.0, "training", "H100"),  # arrivals compressed 2x, durations kept
        ("p3", 100.0, 1, 3600.0, "inference", "H100"),
    ]
    assert trace.stats.skipped == {"no GPU": 1, "never scheduled": 1}
    rules = {r.rule: r.effect for r in trace.stats.rules}
    assert rules["qos BE -> training"] == "1 jobs, 66.7% of replayed GPU-hours"  # 4 of 6
    assert rules["qos LS -> api-serving"] == "1 jobs, 16.7% of replayed GPU-hours"  # 1 of 6
    assert rules["qos Burstable -> inference"] == "1 jobs, 16.7% of replayed GPU-hours"
    assert rules["gpu_spec V100M32 -> H100"] == "1 jobs" and rules["gpu_spec any -> H100"] == "2 jobs"
    assert rules["fractional GPUs rounded up to whole GPUs (a gang holds whole GPUs)"] == "2 of 3 jobs; GPU-hours 5 -> 6 (+26.3%)"
    assert trace.load_rule == "load x2: arrivals compressed 2x, durations unchanged"
    # the planner changes the rules: LS as inference, the V100s as H200s
    remapped = read_trace(p, "alibaba-openb", ReadOptions(class_map="LS=inference", gpu_map="V100M32=H200"))
    assert [(j.cls, j.gpu_type) for j in remapped.jobs] == [("inference", "H100"), ("training", "H200"), ("inference", "H100")]
    assert {r.rule for r in remapped.stats.rules} >= {"qos LS -> inference", "gpu_spec V100M32 -> H200"}


@pytest.mark.parametrize(
    ("fmt", "options", "expect"),
    [
        ("alibaba-openb", ReadOptions(class_map="Ls=inference"), "--class-map: Ls=inference: no row of openb.csv has qos 'Ls' (it has BE, Burstable, LS)"),
        ("alibaba-openb", ReadOptions(gpu_map="A100=H200"), "--gpu-map: A100=H200: no row of openb.csv has gpu_spec 'A100' (it has V100M32, any)"),
        ("alibaba-openb", ReadOptions(class_map="LS=gpu"), "--class-map: LS=gpu: unknown value 'gpu' (expected one of training, inference, api-serving)"),
        ("alibaba-openb", ReadOptions(class_map="LS"), "--class-map: bad mapping 'LS' (expected KEY=VALUE)"),
        ("csv", ReadOptions(columns="arrival=creation_time,gpus=num_gpu,duration=deletion_time,class=qos", class_map="LS=api-serving,BEE=training"),
         "--class-map: BEE=training: no row of openb.csv has qos 'BEE' (it has LS)"),
        ("csv", ReadOptions(columns="arrival=creation_time,gpus=num_gpu,duration=deletion_time,class=qos,gpu_type=gpu_spec", class_map="LS=api-serving",
                            gpu_map="V100=H100"), "--gpu-map: V100=H100: no row of openb.csv has gpu_spec 'V100' (it has V100M32, any)"),
    ],
)
def test_a_map_key_no_row_has_is_refused(tmp_path: Path, fmt: str, options: ReadOptions, expect: str) -> None:
    p = tmp_path / "openb.csv"
    p.write_text(OPENB if fmt == "alibaba-openb" else "\n".join(OPENB.replace(",BE,", ",LS,").replace(",Burstable,", ",LS,").splitlines()[:4]) + "\n")
    with pytest.raises(TraceError) as exc:
        read_trace(p, fmt, options)
    assert str(exc.value).startswith(expect) and "\n" not in str(exc.value)


# ------------------------------------------------------------------ v3: inputs refused or reported, generic readers


@pytest.mark.parametrize(
    ("fmt", "text", "expect"),
    [
        ("csv", "name,arrival,gpus,duration\na,0,8,60\nb,1,8,60\na,2,8,60\n", "t.csv: duplicate job name 'a' on lines 2 and 4"),
        ("alibaba-openb", OPENB.replace("p3,", "p1,"), "t.csv: duplicate job name 'p1' on lines 2 and 4"),
    ],
)
def test_a_duplicate_job_name_is_one_line_naming_it_and_both_lines(tmp_path: Path, fmt: str, text: str, expect: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(TraceError) as exc:
        read_trace(p, fmt, ReadOptions(skip_bad_rows=True))  # never skipped: a second job of one name would corrupt the run
    assert str(exc.value) == f"{tmp_path}/{expect} (job names must be unique)"


def test_text_that_is_not_utf8_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(b"arr\xe9val,gpus,duration\n1,8,10\n")
    with pytest.raises(TraceError, match=r"t\.csv:1: not UTF-8 text \(byte 0xe9 at column 4\)"):
        read_trace(p, "csv")
    p.write_bytes(b"arrival,gpus,duration\n1,8,10\n2,8,10\n3,8,\xff0\n")
    with pytest.raises(TraceError, match=r"t\.csv:4: not UTF-8 text"):
        read_trace(p, "csv")
    p.write_bytes(b"\xef\xbb\xbfarrival,gpus,duration\n1,8,10\n")  # a byte-order mark is not part of the first column's name
    assert len(read_trace(p, "csv").jobs) == 1


def test_skipped_rows_keep_their_first_reasons_with_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "arrival,gpus,duration\n1,8,10\n2,-3,10\n3,x,10\n4,2,0\n5,1,nan\n6,2,5\n7,0,1\n8,0,1\n")
    stats = read_trace(p, "csv", ReadOptions(skip_bad_rows=True)).stats
    assert sum(stats.skipped.values()) == 6
    assert stats.examples == [
        "t.csv:3: gpus: must be a whole number 1..4096, got '-3'",
        "t.csv:4: gpus: not a number: 'x'",
        "t.csv:5: duration: must be > 0 seconds, got '0'",
        "t.csv:6: duration: not finite: 'nan'",
        "t.csv:8: gpus: must be a whole number 1..4096, got '0'",
    ]
    assert stats.to_dict()["firstSkipped"] == stats.examples


def test_class_and_priority_columns_are_picked_up_by_their_common_names(tmp_path: Path) -> None:
    p = write(tmp_path, "submit_time,num_gpu,runtime,qos,priority,job_id\n0,8,60,LS,900,a\n5,1,60,BE,,b\n9,2,60,training,-5,c\n")
    trace = read_trace(p, "csv")
    assert [(j.name, j.arrival, j.gpus, j.cls, j.priority) for j in trace.jobs] == [
        ("a", 0.0, 8, "api-serving", 900), ("b", 5.0, 1, "training", None), ("c", 9.0, 2, "training", -5)]
    rules = [r.rule for r in trace.stats.rules]
    assert ("CSV fields: arrival=submit_time:s (by name), gpus=num_gpu (by name), duration=runtime:s (by name), class=qos (by name), "
            "name=job_id (by name), priority=priority (by name)") in rules
    assert "qos LS -> api-serving" not in rules and "class LS -> api-serving" in rules
    p = write(tmp_path, "arrival,gpus,duration,job_type\n0,8,60,web\n")
    with pytest.raises(TraceError, match=r"t\.csv:2: job_type: unknown class 'web' \(add it to --class-map"):
        read_trace(p, "csv")  # picked up, so never silently "training"


def test_json_lines_with_a_field_mapping_and_time_units(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"id": "x", "ts": "2024-05-01T10:00:30Z", "n": 8, "ms": 90000, "kind": "inference"}\n'
        '{"id": "y", "ts": "2024-05-01T10:00:00Z", "n": 2, "ms": 1500, "kind": "api-serving"}\n\n'
        '{"id": "z", "ts": "2024-05-01T11:00:00+00:00", "n": 1, "ms": 60000}\n'
    )
    trace = read_trace(p, "jsonl", ReadOptions(columns="arrival=ts:iso,duration=ms:ms,gpus=n,class=kind,name=id", skip_bad_rows=True))
    assert [(j.name, j.arrival, j.gpus, j.duration, j.cls) for j in trace.jobs] == [("y", 0.0, 2, 1.5, "api-serving"), ("x", 30.0, 8, 90.0, "inference")]
    assert trace.stats.examples == ["t.jsonl:4: kind: unknown class '' (empty; classes: training, inference, api-serving)"]
    fields = next(r for r in trace.stats.rules if r.rule.startswith("JSON Lines fields"))
    assert fields.rule == "JSON Lines fields: arrival=ts:iso, gpus=n, duration=ms:ms, class=kind, name=id"
    assert fields.effect.startswith("arrival in iso, measured from the earliest row (2024-05-01T10:00:00+00:00); duration in ms")
    epoch = tmp_path / "e.csv"
    epoch.write_text("arrival,gpus,duration\n1714557600000,1,2\n1714557660000,1,2\n")
    jobs = read_trace(epoch, "csv", ReadOptions(columns="arrival=arrival:epoch-ms,duration=duration:h")).jobs
    assert [(j.arrival, j.duration) for j in jobs] == [(0.0, 7200.0), (60.0, 7200.0)]
    with pytest.raises(TraceError, match=r"--columns: arrival=ts:hours: unknown arrival unit 'hours'"):
        read_trace(p, "jsonl", ReadOptions(columns="arrival=ts:hours"))
    p.write_text('{"ts": 1, "n": 1, "ms": 5}\n[1, 2]\n')
    with pytest.raises(TraceError, match=r"t\.jsonl:2: not a JSON object"):
        read_trace(p, "jsonl", ReadOptions(columns="arrival=ts,duration=ms,gpus=n"))


@pytest.mark.parametrize(
    ("line", "key"),
    [('{"ts": 2, "n": 4, "n": 8, "ms": 5}', "n"), ('{"ts": 2, "n": 4, "ms": 5, "note": "a\\"b", "ms": 9}', "ms")],
    ids=["plain", "with-an-escape"],
)
def test_a_key_given_twice_in_a_json_lines_row_is_one_line_never_the_last_value(tmp_path: Path, line: str, key: str) -> None:
    """A JSON parser keeps the last value silently (a generator's bug would change a job's GPUs
    without a word), so a repeated key stops the read, as it does in a spec file; skipping bad
    rows does not skip it."""
    p = tmp_path / "t.jsonl"
    p.write_text('{"ts": 1, "n": 1, "ms": 5}\n' + line + "\n")
    with pytest.raises(TraceError) as exc:
        read_trace(p, "jsonl", ReadOptions(columns="arrival=ts,duration=ms,gpus=n", skip_bad_rows=True))
    assert str(exc.value) == f"{p}:2: duplicate key {key!r}"


def test_any_request_trace_maps_onto_serving_replicas(tmp_path: Path) -> None:
    # the by-hand trace of test_azure_llm_replicas_follow_token_work_by_hand, in another tool's columns and milliseconds
    rows = ["time_ms,prompt_tokens,completion_tokens", "0,1000,100", "30000,1000,100"]
    rows += [f"{60_000 + i * 1000 + 500},1000,100" for i in range(20)]
    rows += ["130000,0,0"]
    p = tmp_path / "reqs.csv"
    p.write_text("\n".join(rows) + "\n")
    opts = ReadOptions(columns="arrival=time_ms:ms,input=prompt_tokens,output=completion_tokens",
                       replica="prefillTokensPerSecond=1000,decodeTokensPerSecond=100,windowSeconds=60,targetUtilisation=0.5,gpusPerReplica=4")
    trace = read_trace(p, "azure-llm", opts)
    assert [(j.name, j.arrival, j.duration, j.gpus) for j in trace.jobs] == [("api-replica-1", 0.0, 180.0, 4), ("api-replica-2", 60.0, 60.0, 4)]
    assert trace.stats.rules[-1].rule == "request fields: arrival=time_ms:ms, input=prompt_tokens, output=completion_tokens"
    with pytest.raises(TraceError, match="--columns: bad mapping 'gpus=n' for a request trace"):
        read_trace(p, "azure-llm", ReadOptions(columns="gpus=n"))

"""``mcsched calibrate``: simulated vs recorded waits on an openb-format trace, by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.errors import TraceError
from scheduler.sim.calibrate import calibrate, ks, wasserstein
from tests.sim.shared import TRACES, needs_traces

# A 4-GPU cluster. a: 4 GPUs 0..100 (recorded: started at once). b (t=10): 4 GPUs, waits for a
# in the replay (placed at 100: 90 s), recorded 30 s. c: a fractional pod (not compared, but
# replayed: 1 GPU at 200..300). d never started (not compared).
PODS = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
a,1,1,4,1000,,BE,Succeeded,0,100,0
b,1,1,4,1000,,LS,Succeeded,10,140,40
c,1,1,1,500,,BE,Succeeded,200,300,200
d,1,1,1,1000,,BE,Pending,250,260,
"""
NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,2,T4\nn1,1,1,2,P100\n"


def write(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "pods.csv").write_text(PODS)
    (tmp_path / "nodes.csv").write_text(NODES)
    return tmp_path / "pods.csv", tmp_path / "nodes.csv"


def test_waits_pair_up_for_whole_gpu_pods_that_started(tmp_path: Path) -> None:
    pods, nodes = write(tmp_path)
    c = calibrate(pods, nodes)
    assert (c.pods, c.gpus, c.per_model) == (2, 4, {"T4": 2, "P100": 2})
    assert sorted(zip(c.recorded, c.simulated, strict=True)) == [(0.0, 0.0), (30.0, 90.0)]
    assert c.wasserstein == pytest.approx((0 + 60) / 2) and c.ks == 0.5 and c.peak_share == 1.0
    d = c.to_dict()
    assert d["quantiles"]["p50"] == {"recorded": 0.0, "simulated": 0.0} and d["quantiles"]["p99"] == {"recorded": 30.0, "simulated": 90.0}


def test_distances_by_hand() -> None:
    assert wasserstein([0, 10], [5, 15]) == 5.0
    assert ks([1, 2, 3], [1, 2, 3]) == 0.0 and ks([1, 2], [3, 4]) == 1.0


def test_the_command_writes_its_report_and_refuses_a_bad_node_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pods, nodes = write(tmp_path)
    main(["calibrate", "--trace", str(pods), "--nodes", str(nodes), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert out.startswith("Calibration: simulated vs recorded waits of 2 whole-GPU pods")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.md", "calibration.json", "qq.png"}
    nodes.write_text("sn,gpus\nn0,2\n")
    with pytest.raises(TraceError, match=r"nodes\.csv: missing column\(s\) gpu, model"):
        calibrate(pods, nodes)


@pytest.mark.parametrize(
    ("nodes", "expect"),
    [
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,1\n", "nodes.csv:2: gpu: empty"),  # a short row: was a TypeError traceback
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,V100\nn1,1,1,-6,V100\n", "nodes.csv:3: gpu: -6: a node has 0 GPUs or more"),  # was subtracted
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,\n", "nodes.csv:2: model: empty (a node with 8 GPUs)"),
    ],
)
def test_a_bad_node_row_is_one_line(tmp_path: Path, nodes: str, expect: str) -> None:
    pods, path = write(tmp_path)
    path.write_text(nodes)
    with pytest.raises(TraceError) as exc:
        calibrate(pods, path)
    assert str(exc.value) == f"{tmp_path}/{expect}"


def test_a_short_pod_row_and_an_out_that_is_a_file_are_one_line_before_any_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pods, nodes = write(tmp_path)
    pods.write_text(PODS + "e,1\n")
    argv = ["calibrate", "--trace", str(pods), "--nodes", str(nodes), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == f"error: {pods}:6: num_gpu: empty (use --skip-bad-rows to count and skip)"
    main([*argv, "--skip-bad-rows"])  # the flag that message names exists
    assert capsys.readouterr().out.startswith("Calibration: simulated vs recorded waits of 2 whole-GPU pods")
    (tmp_path / "afile").touch()
    with pytest.raises(SystemExit) as exc:
        main([*argv[:-1], str(tmp_path / "afile")])
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == f"error: --out: {tmp_path / 'afile'} is a file, not a directory"


@needs_traces
def test_openb_calibration_runs_on_the_real_trace(tmp_path: Path) -> None:
    folder = TRACES / "alibaba-gpu-v2023"
    c = calibrate(folder / "openb_pod_list_default.csv", folder / "openb_node_list_gpu_node.csv")
    assert c.gpus == 6212 and c.pods > 3000 and c.wasserstein >= 0 and 0 <= c.ks <= 1

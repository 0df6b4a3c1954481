"""``kind: Scenario`` specs: validated like every spec (file:line: field: why), checked against the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import SpecError, SpecErrors
from scheduler.loading import load_catalog
from scheduler.paths import default_catalog, examples_dir
from scheduler.sim.scenario import load_scenario
from tests.cli_runner import run

HEAD = "apiVersion: mcsched.io/v1\nkind: Scenario\nmetadata: {name: s}\nspec:\n  events:\n"


def scenario(tmp_path: Path, *events: str) -> Path:
    p = tmp_path / "scenario.yaml"
    p.write_text(HEAD + "".join(f"    - {e}\n" for e in events))
    return p


def errors(path: Path) -> list[str]:
    with pytest.raises((SpecErrors, SpecError)) as exc:
        load_scenario(path, load_catalog(default_catalog()))
    err = exc.value
    if isinstance(err, SpecErrors):
        return [e.one_line() for e in err.errors]
    assert isinstance(err, SpecError)
    return [err.one_line()]


def test_the_shipped_scenario_loads_in_time_order() -> None:
    name, actions = load_scenario(examples_dir() / "sim" / "scenario-azure-outage.yaml", load_catalog(default_catalog()))
    assert name == "azure-outage"
    assert [a.label for a in actions] == ["azure down", "azure up +45s latency", "azure +0s latency", "aws/us-east-1/H100 = 0"]
    assert [a.at for a in actions] == sorted(a.at for a in actions)


@pytest.mark.parametrize(
    ("event", "expect"),
    [
        ("{at: -1, backend: azure, up: false}", ":6: spec.events[0].at: Input should be greater than or equal to 0"),
        ("{at: 10, backend: azure}", ":6: spec.events[0]: a backend event needs up and/or extraLatencySeconds"),
        ("{at: 10, backend: azure, up: false, capacity: 3}", "not both"),
        ("{at: 10, cloud: aws, region: us-east-1, capacity: 0}", "missing gpuType"),
        ("{at: 10, backend: azure, up: maybe}", "spec.events[0].up: Input should be a valid boolean"),
        ("{at: 10, backend: azure, up: true, colour: red}", "spec.events[0].colour: unknown field"),
        ("{at: 10, backend: nimbus, up: false}", ":6: spec.events[0].backend: unknown backend 'nimbus'"),
        ("{at: 10, cloud: aws, region: mars-1, gpuType: H100, capacity: 0}", ":6: spec.events[0].region: aws has no region 'mars-1'"),
        ("{at: 10, cloud: stargate, region: abilene-tx, gpuType: H100, capacity: 0}", "spec.events[0].gpuType: stargate/abilene-tx has no H100 pool"),
    ],
)
def test_a_bad_event_names_file_line_and_field(tmp_path: Path, event: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = errors(scenario(tmp_path, event))
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "scenario.yaml")) and expect in lines[0], lines
    # `mcsched validate` says the same (it used to pass a scenario naming what the catalog lacks)
    code, out, err = run(["validate", str(tmp_path / "scenario.yaml")], capsys)
    assert code == 2 and (out + err).strip() == lines[0]


def test_validate_checks_a_scenario_against_the_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", str(examples_dir() / "sim" / "scenario-azure-outage.yaml")], capsys)
    assert code == 0 and out.strip() == "ok: 1 document(s) in 1 file(s) (scenarios checked against the shipped example catalog)"


def test_an_empty_or_wrong_document_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "scenario.yaml"
    p.write_text(HEAD.replace("  events:\n", "  events: []\n"))
    assert "spec.events: List should have at least 1 item" in errors(p)[0]
    p.write_text((examples_dir() / "contract.yaml").read_text())
    assert "expected exactly one Scenario document, found Contract" in errors(p)[0]

"""Reading catalog/contract from the scheduler's ConfigMap (no API server can run here, so a
minimal CoreV1Api stand-in answers read_namespaced_config_map like the real client)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scheduler.errors import MCSchedError, SpecError
from scheduler.kube.config import config_from_configmap
from scheduler.paths import default_catalog, default_contract


class CoreV1:
    def __init__(self, data: dict[str, str] | None, fail: Exception | None = None) -> None:
        self.data, self.fail, self.calls = data, fail, []

    def read_namespaced_config_map(self, name: str, namespace: str) -> SimpleNamespace:
        self.calls.append((name, namespace))
        if self.fail:
            raise self.fail
        return SimpleNamespace(data=self.data)


def test_reads_and_validates_both_documents() -> None:
    api = CoreV1({"catalog.yaml": default_catalog().read_text(), "contract.yaml": default_contract().read_text()})
    catalog, contract = config_from_configmap("mcsched-config", "mcsched", api)
    assert api.calls == [("mcsched-config", "mcsched")]
    assert contract.holder == "azure" and "stargate" in catalog.backend_names


def test_a_broken_configmap_is_a_one_line_error() -> None:
    bad = default_contract().read_text().replace("holder: azure", "holder: ibm").replace("api-serving: [azure]", "api-serving: [ibm]")
    with pytest.raises(SpecError, match=r"configmap/mcsched/mcsched-config/contract.yaml:.*unknown holder 'ibm'"):
        config_from_configmap("mcsched-config", "mcsched", CoreV1({"catalog.yaml": default_catalog().read_text(), "contract.yaml": bad}))
    with pytest.raises(SpecError, match=r"missing key 'contract.yaml'"):
        config_from_configmap("mcsched-config", "mcsched", CoreV1({"catalog.yaml": default_catalog().read_text()}))
    with pytest.raises(MCSchedError, match=r"cannot read ConfigMap mcsched/mcsched-config: Forbidden"):
        config_from_configmap("mcsched-config", "mcsched", CoreV1(None, fail=type("ApiException", (Exception,), {"reason": "Forbidden"})()))

"""API keys without Ray: the key file (hashes, 0600), the CLI, and the gateway's check (401, 429)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scheduler.errors import ApiKeyError
from scheduler.metrics import ERROR_CODES, MAX_KEY_LABELS, ServeMetrics
from scheduler.runtime.serve.keys import KEY_FILE, Guard, KeyStore, digest
from scheduler.runtime.serve.openai import ApiError

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(guard: Guard, authorization: str | None) -> ApiError:
    with pytest.raises(ApiError) as exc:
        guard.check(authorization)
    return exc.value


def test_a_key_is_stored_only_as_its_hash_in_a_0600_file(tmp_path: Path) -> None:
    store = KeyStore.in_dir(tmp_path)
    key = store.add("alice", rate=5)
    text = (tmp_path / KEY_FILE).read_text()
    assert key.startswith("mcs-") and len(key) > 40 and key not in text and digest(key) in text
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert store.table() == {digest(key): ("alice", 5.0)}
    other = store.add("bob")
    assert other != key and {n for n, _ in store.table().values()} == {"alice", "bob"}
    store.revoke("alice")
    assert [k.name for k in store.load()] == ["bob"]
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600


@pytest.mark.parametrize(
    ("action", "expect"),
    [
        (lambda s: s.add("Bad Name"), "a DNS label"),
        (lambda s: (s.add("a"), s.add("a")), "exists already"),
        (lambda s: s.revoke("nobody"), "no api key named 'nobody'"),
        (lambda s: s.add("a", rate=0), "must be > 0"),
    ],
)
def test_key_commands_refuse_bad_input_and_change_nothing(tmp_path: Path, action: object, expect: str) -> None:
    store = KeyStore.in_dir(tmp_path)
    with pytest.raises(ApiKeyError, match=expect):
        action(store)  # type: ignore[operator]
    assert len(store.load()) <= 1


def test_a_damaged_key_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text('{"keys": [{"name": "a", "sha256": 1}]}')
    with pytest.raises(ApiKeyError, match=KEY_FILE):
        KeyStore.in_dir(tmp_path).table()


def test_no_key_or_a_wrong_key_is_401_and_a_good_key_passes() -> None:
    guard = Guard(clock=Clock())
    assert refused(guard, "Bearer whatever").status == 503  # no table yet: closed, not open
    guard.update({})
    assert refused(guard, "Bearer whatever").status == 401  # no keys at all: still closed
    guard.update({digest("mcs-good"): ("alice", 10.0)})
    for header in (None, "", "Bearer", "Basic bWNzLWdvb2Q=", "mcs-good"):
        err = refused(guard, header)
        assert err.status == 401 and err.code == "missing_api_key" and err.body()["error"]["type"] == "invalid_request_error"
    err = refused(guard, "Bearer mcs-wrong-key-0123456789")
    assert err.status == 401 and err.code == "invalid_api_key" and "mcs-wrong-key" not in err.message
    assert guard.check("Bearer mcs-good").name == "alice" and guard.check("bearer  mcs-good").name == "alice"
    guard.update({})  # revoked
    assert refused(guard, "Bearer mcs-good").status == 401


def test_over_its_rate_a_key_gets_429_with_retry_after_and_recovers() -> None:
    clock = Clock()
    guard = Guard(share=0.5, clock=clock)  # two gateway replicas: each allows half the rate
    guard.update({digest("k1"): ("alice", 10.0), digest("k2"): ("bob", 10.0)})
    for _ in range(5):  # burst: one second's worth of this replica's share
        guard.check("Bearer k1")
    err = refused(guard, "Bearer k1")
    assert err.status == 429 and err.code == "rate_limit_exceeded" and err.type == "requests" and err.headers["retry-after"] == "1"
    assert guard.check("Bearer k2").name == "bob"  # per key
    clock.now += 0.2  # 5/s: one more token
    guard.check("Bearer k1")
    assert refused(guard, "Bearer k1").status == 429
    clock.now += 10
    sent = 0
    for _ in range(50):  # a sustained second: at most burst + rate
        try:
            guard.check("Bearer k1")
            sent += 1
        except ApiError:
            pass
        clock.now += 0.02
    assert 5 <= sent <= 11


def test_errors_are_counted_with_bounded_labels() -> None:
    registry = CollectorRegistry()
    metrics = ServeMetrics(registry)
    rows = [["401", "invalid_api_key", "none", 3], ["400", "invalid_json", "alice", 2], ["400", "<script>", "alice", 1],
            ["429", "rate_limit_exceeded", "Bad Key!", 1], ["999x", "invalid_json", "a", 1]]
    rows += [["429", "rate_limit_exceeded", f"k{i}", 1] for i in range(MAX_KEY_LABELS + 5)]
    metrics.apply({"errors": rows})
    text = generate_latest(registry).decode()
    assert 'mcsched_serve_errors_total{code="401",error="invalid_api_key",key="none"} 3.0' in text
    assert 'mcsched_serve_errors_total{code="400",error="other",key="alice"} 1.0' in text
    assert 'key="Bad Key!"' not in text and "999x" not in text and "<script>" not in text
    keys = {line.split('key="')[1].split('"')[0] for line in text.splitlines() if line.startswith("mcsched_serve_errors_total{")}
    assert len(keys - {"other"}) <= MAX_KEY_LABELS and "other" in keys


def test_every_code_the_endpoint_answers_with_is_a_known_label_value() -> None:
    import json

    from scheduler.runtime.serve.openai import parse_request

    codes = set()
    for body in (b"{", b'{"model":"m","messages":[{"role":"user","content":"x"}],"zz":1}', b'{"model":"m"}', b'{"model":"m","messages":"x"}',
                 json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode()):
        with pytest.raises(ApiError) as exc:
            parse_request("chat", body)
        codes.add(exc.value.code)
    guard = Guard()
    guard.update({})
    codes |= {refused(guard, None).code, refused(guard, "Bearer x").code}
    assert codes <= ERROR_CODES and len(codes) == 7


def run_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MCSCHED_HOME": str(state), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "scheduler", "api-keys", *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_adds_prints_once_lists_and_revokes(tmp_path: Path) -> None:
    added = run_cli(tmp_path, "add", "ci-bot", "--rate", "7")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("mcs-") and "shown only now" in added.stderr
    listed = run_cli(tmp_path, "list")
    assert listed.returncode == 0 and "ci-bot" in listed.stdout and "7 requests/s" in listed.stdout and key not in listed.stdout
    assert KeyStore.in_dir(tmp_path).table() == {digest(key): ("ci-bot", 7.0)}
    dup = run_cli(tmp_path, "add", "ci-bot")
    assert dup.returncode == 2 and dup.stderr.count("\n") == 1 and "exists already" in dup.stderr and "Traceback" not in dup.stderr
    assert run_cli(tmp_path, "revoke", "ci-bot").returncode == 0
    gone = run_cli(tmp_path, "revoke", "ci-bot")
    assert gone.returncode == 2 and "no api key named" in gone.stderr
    assert KeyStore.in_dir(tmp_path).table() == {}

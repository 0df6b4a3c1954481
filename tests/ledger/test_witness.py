"""Independent witnesses (issue 27): two ``mcsched witness`` servers on loopback HTTP, each
with its own key and 0600 state, cosign only checkpoints consistent with the last one they
cosigned; ``audit verify --trust`` requires k of n cosignatures."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.ledger import Ledger
from scheduler.ledger.signing import load_public_key, log_verifier
from scheduler.ledger.witness import open_witness, serve
from tests.builders import a_job, two_clouds
from tests.cli_runner import run_joined as run
from tests.ledger.forgery import ORIGIN, World, rehash


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path, two_clouds(azure_h100=8))
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    w.op(lambda e: e.submit(a_job().named("b").gpus(8).obj()))
    return w


@pytest.fixture
def witnesses(world: World) -> Iterator[list[tuple[str, str, Path]]]:
    """Two witness servers (url, verifier key, state file), each in its own thread with its own key."""
    vkey = log_verifier(ORIGIN, load_public_key(world.pub)).vkey()
    servers, out = [], []
    for i in (1, 2):
        state = world.tmp / f"w{i}-state.json"
        w = open_witness(f"azure.example/w{i}", world.tmp / f"w{i}.key", state, [vkey])
        server = serve(w, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out.append((f"http://127.0.0.1:{server.server_address[1]}", w.verifier.vkey(), state))
    yield out
    for server in servers:
        server.shutdown()
        server.server_close()


def trust(world: World, wits: list[tuple[str, str, Path]], quorum: int) -> Path:
    path = world.tmp / "trust.toml"
    keys = ", ".join(f'"{k}"' for _, k, _ in wits)
    path.write_text(f'log = "{log_verifier(ORIGIN, load_public_key(world.pub)).vkey()}"\nwitnesses = [{keys}]\nquorum = {quorum}\n')
    return path


def test_two_witnesses_cosign_and_verify_requires_the_quorum(world: World, witnesses: list, capsys: pytest.CaptureFixture[str]) -> None:
    world.close()
    (u1, _, s1), (u2, _, _) = witnesses
    code, text = run(capsys, "audit", "verify", "--db", str(world.db), "--trust", str(trust(world, witnesses, 2)))
    assert code == 1 and "has 0 of the 2 witness cosignatures" in text, text
    code, text = run(capsys, "audit", "cosign", "--db", str(world.db), "--witness-url", u1)
    assert code == 0 and "cosigned checkpoint of size" in text, text
    code, text = run(capsys, "audit", "verify", "--db", str(world.db), "--trust", str(trust(world, witnesses, 2)))
    assert code == 1 and "has 1 of the 2 witness cosignatures" in text, text
    code, text = run(capsys, "audit", "verify", "--db", str(world.db), "--trust", str(trust(world, witnesses, 1)))
    assert code == 0 and "cosigned by 1 of 2 witnesses (quorum 1)" in text, text
    code, text = run(capsys, "audit", "cosign", "--db", str(world.db), "--witness-url", u1, "--witness-url", u2)
    assert code == 0, text
    code, text = run(capsys, "audit", "verify", "--db", str(world.db), "--trust", str(trust(world, witnesses, 2)))
    assert code == 0 and "cosigned by 2 of 2 witnesses (quorum 2)" in text, text
    assert stat.S_IMODE(os.stat(s1).st_mode) == 0o600 and stat.S_IMODE(os.stat(world.tmp / "w1.key").st_mode) == 0o600


def test_a_witness_follows_the_log_forward_and_refuses_a_fork(world: World, witnesses: list, capsys: pytest.CaptureFixture[str]) -> None:
    (u1, _, _), _ = witnesses
    assert run(capsys, "audit", "cosign", "--db", str(world.db), "--witness-url", u1)[0] == 0
    world.op(lambda e: e.release("a"))  # the log grows: the witness checks consistency from its last size
    assert run(capsys, "audit", "cosign", "--db", str(world.db), "--witness-url", u1)[0] == 0
    world.close()
    rehash(world, lambda r: [x for x in r if x.get("job") != "b"], "real")  # a history rewritten with the real key
    code, text = run(capsys, "audit", "cosign", "--db", str(world.db), "--witness-url", u1)
    assert code == 1 and "refused" in text and ("not consistent" in text or "rollback" in text), text


def test_a_down_witness_is_one_line_and_the_writer_goes_on(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "audit", "cosign", "--db", str(world.db), "--witness-url", "http://127.0.0.1:9")
    assert code == 1 and "unreachable" in text and len(text.splitlines()) == 1, text
    world.op(lambda e: e.release("a"))  # decisions never wait for witnesses
    world.close()
    assert Ledger(world.db, readonly=True).checkpoint is not None


def test_the_live_writer_is_cosigned_in_the_background_and_a_down_witness_only_adds_lag(tmp_path: Path) -> None:
    """``Cosigner.notify`` as the ledger's on_checkpoint: decisions never wait; lag is 0 once all witnesses caught up."""
    import time

    from scheduler.ledger.witness import Cosigner
    from tests.ledger.forgery import a_witness, in_process

    w = World(tmp_path, two_clouds(azure_h100=8))
    wits = {"w1": a_witness(tmp_path, "azure.example/w1"), "w2": a_witness(tmp_path, "azure.example/w2")}
    up = in_process(wits)
    down = {"on": True}

    def post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        if url == "w2" and down["on"]:
            from scheduler.errors import LedgerError

            raise LedgerError(f"witness {url}: unreachable (connection refused)")
        return up(url, body, timeout)

    cos = Cosigner(w.db, ["w1", "w2"], retry=0.05, post=post).start()
    w.ledger.on_checkpoint = cos.notify
    for i in range(3):
        w.op(lambda e, i=i: e.submit(a_job().named(f"j{i}").gpus(1).obj()))  # never blocked by the down witness
    deadline = time.monotonic() + 10
    while not any(": cosigned checkpoint" in line for line in cos.last) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cos.lag() > 0 and any("unreachable" in line for line in cos.last), cos.last
    down["on"] = False
    cos.notify()
    while cos.lag() > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cos.lag() == 0, cos.last
    cos.stop()
    trust = w.trust(witnesses=tuple(x.verifier for x in wits.values()), quorum=2)
    report = w.verify(trust=trust)
    assert report.ok and "cosigned by 2 of 2" in report.line(), report.line()
    w.close()


def test_the_cosigner_takes_the_writers_leaf_hashes_and_forgets_a_failed_commits(tmp_path: Path) -> None:
    """``on_leaves``: the writer hands over the hashes it computed (the cosigner reads only what it missed)."""
    from scheduler.ledger.witness import Cosigner
    from tests.ledger.forgery import a_witness, in_process

    w = World(tmp_path, two_clouds(azure_h100=8))  # records written before the cosigner listened: read from the database
    wits = {"w1": a_witness(tmp_path, "azure.example/w1")}
    cos = Cosigner(w.db, ["w1"], post=in_process(wits))
    w.ledger.on_leaves = cos.add_leaves
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    assert cos.round() == [f"witness w1: cosigned checkpoint of size {len(w.ledger)}"]
    size = len(w.ledger)
    cos.add_leaves(size, [b"\x07" * 32] * 3)  # a commit hashed, then failed and taken back by the writer
    cos.add_leaves(size, [])
    w.op(lambda e: e.submit(a_job().named("b").gpus(8).obj()))
    cos._drain()
    assert len(cos._tree) == len(w.ledger)  # complete from the writer's hashes alone: nothing to read or rehash
    assert cos.round() == [f"witness w1: cosigned checkpoint of size {len(w.ledger)}"]  # consistent: the witness agrees
    cos.stop()
    w.close()


@pytest.mark.parametrize(("request_head", "status"), [
    (b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"GET /add-checkpoint HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
], ids=["letters", "negative", "get", "elsewhere"])
def test_a_malformed_request_gets_an_http_error_and_the_witness_serves_on(
    witnesses: list[tuple[str, str, Path]], request_head: bytes, status: bytes
) -> None:
    """A Content-Length that is not a count of bytes used to end the connection with no reply (a
    ValueError in the handler); other methods got http.server's 501."""
    import socket

    url = witnesses[0][0]
    port = int(url.rsplit(":", 1)[1])
    for _ in range(2):  # and the server still answers the next one
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request_head)
            reply = s.recv(4096)
        assert reply.split(b" ", 2)[1] == status, reply


def test_witness_run_refuses_a_port_it_cannot_listen_on_in_one_line(world: World, witnesses: list[tuple[str, str, Path]], capsys: pytest.CaptureFixture[str]) -> None:
    vkey = log_verifier(ORIGIN, load_public_key(world.pub)).vkey()
    taken = witnesses[0][0].rsplit(":", 1)[1]
    base = ["witness", "run", "--log", vkey, "--key", str(world.tmp / "w9.key"), "--state", str(world.tmp / "w9.json")]
    code, text = run(capsys, *base, "--port", "99999")
    assert (code, text) == (2, "witness run: --port 99999: must be 0..65535 (0: any free one)")
    code, text = run(capsys, *base, "--port", taken)
    assert code == 2 and text.startswith(f"witness run: cannot listen on 127.0.0.1:{taken} (") and "\n" not in text, text


def test_keygen_with_a_bad_name_or_origin_is_exit_2_and_writes_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = run(capsys, "witness", "keygen", "--name", "bad name", "--key", str(tmp_path / "wk" / "w.key"))
    assert (code, text) == (2, "witness keygen: --name: key name 'bad name' must be non-empty, without spaces or '+'")
    monkeypatch.setenv("MCSCHED_HOME", str(tmp_path / "home"))
    code, text = run(capsys, "audit", "keygen", "--origin", "bad origin")
    assert (code, text) == (2, "audit keygen: --origin: key name 'bad origin' must be non-empty, without spaces or '+'")
    assert not (tmp_path / "wk").exists() and not (tmp_path / "home").exists()  # the keys used to be written first


def test_witness_run_with_a_bad_log_key_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "witness", "run", "--log", "garbage", "--key", str(tmp_path / "w.key"), "--port", "0")
    assert (code, text) == (2, "error: witness: verifier key 'garbage' is not name+hash+key")

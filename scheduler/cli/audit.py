"""``mcsched audit``: verify the ledger against a trust file, prove one job, export, adopt or truncate; ``mcsched witness run``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.app import app, audit_app, fail, out

# The ledger (SQLite, cryptography, the invariants) is imported inside each command: this
# module is imported by every `mcsched` run to register the commands.

witness_app = typer.Typer(help="Run a witness that cosigns a ledger's checkpoints (the holder's side).", no_args_is_help=True)
app.add_typer(witness_app, name="witness")

DbOpt = Annotated[Path, typer.Option("--db", help="Ledger SQLite file (verify, prove and export also read a sealed FILE.zst).")]
TrustOpt = Annotated[
    Path | None, typer.Option("--trust", help="Trust file (TOML): the log's origin and key, witnesses and quorum, pinned contracts and catalogs.")
]
PublicKeyOpt = Annotated[
    Path | None, typer.Option("--public-key", help="Ed25519 public key, when there is no trust file (the origin is then NOT pinned).")
]
SigningKeyOpt = Annotated[Path | None, typer.Option("--signing-key", help="Ledger signing key (default $MCSCHED_HOME/ledger-signing.key).")]


def existing(path: Path, option: str, command: str) -> Path:
    """``path`` when it is a file. Inputs that are not there are usage errors (2), not bad evidence
    (1): a typo must not look like tampering, nor start a new ledger (``adopt``, ``rotate`` and
    ``cosign`` would open one)."""
    if not path.is_file():
        raise fail(f"audit {command}: --{option} {path}: {'a directory, not a file' if path.is_dir() else 'no such file'}", 2)
    return path


@audit_app.command("verify")
def audit_verify(
    db: DbOpt,
    trust: TrustOpt = None,
    public_key: PublicKeyOpt = None,
    allow_unsigned_tail: Annotated[
        bool, typer.Option("--allow-unsigned-tail", help="Check records after the last checkpoint instead of failing (a live writer's last second).")
    ] = False,
    require_signed: Annotated[bool, typer.Option("--require-signed", help="Accepted for compatibility: signed is now the default.")] = False,
    witness: Annotated[Path | None, typer.Option("--witness", help="Replaced by witness cosignatures checked with --trust.", hidden=True)] = None,
) -> None:
    """Exit 0 when every checkpoint, the operator actions, the cosignatures and the contract hold; 1 naming the first bad record."""
    from scheduler.ledger.compact import readable
    from scheduler.ledger.signing import default_public_key_path
    from scheduler.ledger.trust import load_trust
    from scheduler.ledger.verify import verify_ledger

    del require_signed  # the default now: unsigned records fail unless --allow-unsigned-tail
    if witness is not None:
        raise fail("audit verify: --witness FILE is gone: list witness keys and a quorum in a trust file and pass --trust FILE (see docs/audit.md)", 2)
    if trust is not None and public_key is not None:
        raise fail("audit verify: pass --trust or --public-key, not both (the trust file names the key)", 2)
    existing(db, "db", "verify")
    if public_key is not None:
        existing(public_key, "public-key", "verify")
    pinned = load_trust(trust) if trust is not None else None
    with readable(db) as path:  # a sealed (FILE.zst) ledger is read from a decompressed copy
        report = verify_ledger(path, public_key or default_public_key_path(), trust=pinned, allow_unsigned_tail=allow_unsigned_tail)
    if not report.ok:
        raise fail(f"{db}: {report.line()}", 1)
    out.print(f"{db}: {report.line()}", markup=False)


@audit_app.command("prove")
def audit_prove(
    job: Annotated[str, typer.Argument(help="Job name.")],
    db: DbOpt,
    since: Annotated[
        int | None, typer.Option("--since", help="Also prove the latest checkpoint extends the one of this size (RFC 9162 consistency).")
    ] = None,
) -> None:
    """Print JOB's records with Merkle inclusion proofs against the latest signed checkpoint (JSON)."""
    from scheduler.ledger.compact import readable
    from scheduler.ledger.proofs import prove

    with readable(existing(db, "db", "prove")) as path:
        print(json.dumps(prove(path, job, since), indent=1))


@audit_app.command("check-proof")
def audit_check_proof(
    proof: Annotated[Path, typer.Argument(help="A proof written by `audit prove`.")],
    trust: TrustOpt = None,
    public_key: PublicKeyOpt = None,
    held: Annotated[
        Path | None, typer.Option("--held", help="A checkpoint (signed note) you already hold: the proof must extend exactly it.")
    ] = None,
) -> None:
    """Check a proof without the ledger: exit 0 with what it shows, 1 on any altered byte."""
    from scheduler.errors import LedgerInputError
    from scheduler.ledger.proofs import check_proof, load_proof
    from scheduler.ledger.signing import (
        CheckpointFormatError,
        default_public_key_path,
        load_public_key,
        log_verifier,
        parse_checkpoint,
    )
    from scheduler.ledger.trust import load_trust

    doc = load_proof(proof)
    pinned = None
    if trust is not None:
        pinned = load_trust(trust)
        log = pinned.log
    else:
        origin = ""
        try:
            origin = parse_checkpoint(str(doc.get("checkpoint")).encode()).origin if isinstance(doc, dict) else ""
        except CheckpointFormatError:
            origin = "unknown"
        log = log_verifier(origin or "unknown", load_public_key(public_key or default_public_key_path()))
    held_cp = None
    if held is not None:
        try:
            held_cp = parse_checkpoint(held.read_bytes())
        except OSError as exc:
            raise LedgerInputError(f"{held}: cannot read ({exc.strerror})") from None
        except CheckpointFormatError as exc:
            raise fail(f"{held}: not a signed checkpoint ({exc})", 2) from None
    result = check_proof(doc, log, held_cp, pinned)
    if not result.ok:
        raise fail(f"{proof}: {result.line}", 1)
    out.print(result.line + ("" if trust is not None else " (origin NOT pinned: pass --trust)"), markup=False)


@audit_app.command("export")
def audit_export(db: DbOpt) -> None:
    """Print every record as one JSON line (seq, at, kind and the event's fields), exactly as hashed."""
    from scheduler.ledger.compact import readable
    from scheduler.ledger.export import export_lines

    write = sys.stdout.buffer.write
    with readable(existing(db, "db", "export")) as path:
        for line in export_lines(path):
            write(line + b"\n")
    sys.stdout.flush()


@audit_app.command("keygen")
def audit_keygen(
    signing_key: Annotated[Path | None, typer.Option("--signing-key", help="Where to create the key (default $MCSCHED_HOME/ledger-signing.key).")] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="The log's origin: also print its verifier key for a trust file.")] = None,
) -> None:
    """Create the ledger signing key and record MAC key (0600) and the public key beside them; existing keys are kept."""
    from scheduler.ledger import note
    from scheduler.ledger.signing import (
        default_key_path,
        key_id,
        load_or_create_key,
        load_or_create_mac_key,
        log_verifier,
        mac_path_for,
        public_path_for,
    )

    if origin is not None:
        try:
            note.check_name(origin)  # before any key is made: a refused command leaves nothing behind
        except note.NoteError as exc:
            raise fail(f"audit keygen: --origin: {exc}", 2) from None
    path = signing_key or default_key_path()
    key = load_or_create_key(path)
    load_or_create_mac_key(mac_path_for(path))
    out.print(f"signing key {path} (key id {key_id(key.public_key())}); record MAC key {mac_path_for(path)}; public key {public_path_for(path)}", markup=False)
    if origin is not None:
        print(f"log verifier key: {log_verifier(origin, key.public_key()).vkey()}")


def _resolve(kind: str, db: Path, why: str, who: str | None, signing_key: Path | None) -> None:
    from scheduler.ledger.store import Ledger

    ledger = Ledger(existing(db, "db", kind), signing_key=signing_key, operator=True)
    try:
        act = ledger.resolve(kind, why, who)
    finally:
        ledger.close()
    out.print(f"{db}: {act.describe()}; signed as checkpoint {ledger.checkpoint.size if ledger.checkpoint else 0}", markup=False)


WhyOpt = Annotated[str, typer.Option("--why", help="Why (recorded in the ledger, signed).")]
WhoOpt = Annotated[str | None, typer.Option("--who", help="Who decides (default: the login name).")]


@audit_app.command("adopt")
def audit_adopt(db: DbOpt, why: WhyOpt, who: WhoOpt = None, signing_key: SigningKeyOpt = None) -> None:
    """Adopt the records after the last checkpoint that this writer cannot authenticate: sign them, recording who, when and why."""
    _resolve("adopt", db, why, who, signing_key)


@audit_app.command("truncate")
def audit_truncate(db: DbOpt, why: WhyOpt, who: WhoOpt = None, signing_key: SigningKeyOpt = None) -> None:
    """Remove the records after the last checkpoint that this writer cannot authenticate, recording who, when and why."""
    _resolve("truncate", db, why, who, signing_key)


@audit_app.command("rotate")
def audit_rotate(
    db: DbOpt,
    new_key: Annotated[Path, typer.Option("--new-key", help="The new signing key (created 0600 if absent, with a record MAC key beside it).")],
    why: WhyOpt,
    who: WhoOpt = None,
    signing_key: SigningKeyOpt = None,
) -> None:
    """Rotate the log's signing key: the current key signs a rotation naming the new one; verify follows it from the pinned key."""
    from scheduler.ledger.store import Ledger

    ledger = Ledger(existing(db, "db", "rotate"), signing_key=signing_key)
    try:
        act = ledger.rotate(new_key, why, who)
    finally:
        ledger.close()
    out.print(f"{db}: {act.describe()}; from now on sign with {new_key}", markup=False)


@audit_app.command("migrate")
def audit_migrate(
    db: DbOpt,
    to: Annotated[Path, typer.Option("--to", help="The new v3 ledger to write (must not exist).")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The public key the old ledger was signed with.")],
    why: WhyOpt,
    who: WhoOpt = None,
    signing_key: SigningKeyOpt = None,
) -> None:
    """Rewrite a ledger written before v3 as a new v3 ledger (new origin), recording the migration; the old file is only read."""
    from scheduler.ledger.legacy import migrate
    from scheduler.ledger.signing import load_public_key

    act = migrate(existing(db, "db", "migrate"), to, load_public_key(existing(public_key, "public-key", "migrate")), why, signing_key=signing_key, who=who)
    out.print(f"{to}: {act.describe()}", markup=False)


@audit_app.command("cosign")
def audit_cosign(
    db: DbOpt,
    witness_url: Annotated[list[str], typer.Option("--witness-url", help="A witness's base URL (repeat for several).")],
) -> None:
    """Ask witnesses to cosign the ledger's latest checkpoint (consistency-checked) and store their cosignatures."""
    from scheduler.ledger.witness import submit

    existing(db, "db", "cosign")
    for url in witness_url:
        if not _http_url(url):
            raise fail(f"audit cosign: --witness-url {url!r}: not an http(s) URL with a host", 2)
    lines = submit(db, witness_url)
    for line in lines:
        out.print(line, markup=False)
    if not all(": cosigned checkpoint" in line for line in lines):
        raise typer.Exit(1)


def _http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@audit_app.command("trust")
def audit_trust(
    origin: Annotated[str, typer.Option("--origin", help="The log's origin (its checkpoints' first line).")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The log's Ed25519 public key (PEM).")],
    witness_key: Annotated[list[str] | None, typer.Option("--witness-key", help="A witness's verifier key (printed by `mcsched witness run`).")] = None,
    quorum: Annotated[int, typer.Option("--quorum", help="Cosignatures required on the last checkpoint.")] = 0,
    clouds: Annotated[Path | None, typer.Option("--clouds", help="Catalog YAML to pin.")] = None,
    contract: Annotated[Path | None, typer.Option("--contract", help="Contract YAML to pin.")] = None,
) -> None:
    """Print a trust file (TOML) built from what you trust: the key, the origin, witness keys, the YAML in force."""
    from scheduler.cli.app import load_config
    from scheduler.ledger.signing import load_public_key, log_verifier
    from scheduler.ledger.trust import doc_hash, parse_witnesses

    parse_witnesses(witness_key or [], quorum, "audit trust")  # what `audit verify --trust` would refuse, before a file is printed
    lines = [f'log = "{log_verifier(origin, load_public_key(existing(public_key, "public-key", "trust"))).vkey()}"']
    lines.append("witnesses = [" + ", ".join(f'"{w}"' for w in witness_key or []) + "]")
    lines.append(f"quorum = {quorum}")
    if clouds is not None or contract is not None:
        catalog, the_contract = load_config(clouds, contract)
        lines += ["", "[[contract]]", f'sha256 = "{doc_hash(the_contract.model_dump(mode="json", by_alias=True))}"']
        lines += ["", "[[catalog]]", f'sha256 = "{doc_hash(catalog.model_dump(mode="json", by_alias=True))}"']
    print("\n".join(lines))


@witness_app.command("keygen")
def witness_keygen(
    name: Annotated[str, typer.Option("--name", help="The witness's key name (a schema-less URL).")] = "witness.local/w1",
    key: Annotated[Path, typer.Option("--key", help="The witness's own Ed25519 key (created 0600 if absent).")] = Path("witness.key"),
) -> None:
    """Create the witness key (0600) if absent and print its cosignature/v1 verifier key (for trust files)."""
    from scheduler.ledger import note
    from scheduler.ledger.signing import load_or_create_key

    try:
        note.check_name(name)  # before the key is made: a refused command leaves nothing behind
    except note.NoteError as exc:
        raise fail(f"witness keygen: --name: {exc}", 2) from None
    print(note.verifier(name, load_or_create_key(key).public_key(), note.ALG_COSIGNATURE_V1).vkey())


@witness_app.command("run")
def witness_run(
    log: Annotated[list[str], typer.Option("--log", help="Verifier key of a log to witness (repeat for several).")],
    name: Annotated[str, typer.Option("--name", help="The witness's key name (a schema-less URL).")] = "witness.local/w1",
    key: Annotated[Path, typer.Option("--key", help="The witness's own Ed25519 key (created 0600).")] = Path("witness.key"),
    state: Annotated[Path, typer.Option("--state", help="The witness's state file (0600).")] = Path("witness-state.json"),
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).")] = 8470,
) -> None:
    """Serve C2SP tlog-witness add-checkpoint: cosign a checkpoint only if it extends the last one cosigned."""
    from scheduler.ledger.witness import open_witness, serve

    if not 0 <= port <= 65535:
        raise fail(f"witness run: --port {port}: must be 0..65535 (0: any free one)", 2)
    w = open_witness(name, key, state, log)
    try:
        server = serve(w, host, port)
    except OSError as exc:  # the port taken, an address not of this host
        raise fail(f"witness run: cannot listen on {host}:{port} ({exc.strerror or exc})", 2) from None
    out.print(f"witness {name} on http://{host}:{server.server_address[1]}; verifier key {w.verifier.vkey()}", markup=False)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

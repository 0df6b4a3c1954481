"""``mcsched audit``: verify the ledger, prove one job's decisions, export the records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.app import audit_app, fail, out

# The ledger (SQLite, cryptography, the invariants) is imported inside each command: this
# module is imported by every `mcsched` run to register the commands.

DbOpt = Annotated[Path, typer.Option("--db", help="Ledger SQLite file.")]
PublicKeyOpt = Annotated[
    Path | None, typer.Option("--public-key", help="Ed25519 public key (default $MCSCHED_HOME/ledger-signing.pub).")
]


@audit_app.command("verify")
def audit_verify(
    db: DbOpt,
    public_key: PublicKeyOpt = None,
    witness: Annotated[Path | None, typer.Option("--witness", help="Witness log (default $MCSCHED_HOME/witness.jsonl).")] = None,
    require_signed: Annotated[
        bool, typer.Option("--require-signed", help="Fail on records after the last signed checkpoint (a live or crashed writer's unsigned tail).")
    ] = False,
) -> None:
    """Exit 0 when the Merkle tree, the signed checkpoints, the witness and the contract hold; 1 naming the first bad record."""
    from scheduler.ledger.signing import default_public_key_path
    from scheduler.ledger.verify import verify_ledger
    from scheduler.ledger.witness import default_witness_path

    report = verify_ledger(db, public_key or default_public_key_path(), witness or default_witness_path(), require_signed=require_signed)
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
    from scheduler.ledger.proofs import prove

    print(json.dumps(prove(db, job, since), indent=1))


@audit_app.command("check-proof")
def audit_check_proof(proof: Annotated[Path, typer.Argument(help="A proof written by `audit prove`.")], public_key: PublicKeyOpt = None) -> None:
    """Check a proof without the ledger: exit 0 with what it shows, 1 on any altered byte."""
    from scheduler.ledger.proofs import check_proof, load_proof
    from scheduler.ledger.signing import default_public_key_path, load_public_key

    result = check_proof(load_proof(proof), load_public_key(public_key or default_public_key_path()))
    if not result.ok:
        raise fail(f"{proof}: {result.line}", 1)
    out.print(result.line, markup=False)


@audit_app.command("export")
def audit_export(db: DbOpt) -> None:
    """Print every record as one JSON line (seq, at, kind and the event's fields), exactly as hashed."""
    from scheduler.ledger.export import export_lines

    write = sys.stdout.buffer.write
    for line in export_lines(db):
        write(line + b"\n")
    sys.stdout.flush()


@audit_app.command("keygen")
def audit_keygen(
    signing_key: Annotated[Path | None, typer.Option("--signing-key", help="Where to create the key (default $MCSCHED_HOME/ledger-signing.key).")] = None,
) -> None:
    """Create the ledger signing key (0600) and its public key beside it; an existing key is kept."""
    from scheduler.ledger.signing import default_key_path, key_id, load_or_create_key, public_path_for

    path = signing_key or default_key_path()
    key = load_or_create_key(path)
    out.print(f"signing key {path} (key id {key_id(key.public_key())}); public key {public_path_for(path)}", markup=False)

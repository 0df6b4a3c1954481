"""C2SP signed notes, checkpoints and cosignatures, checked against published vectors.

The vectors are other people's bytes: the Go reference implementation's example key and
note (golang.org/x/mod/sumdb/note, PeterNeumann), the signed-note specification's
verifier-key example (example.com/foo), and the tlog-checkpoint / tlog-cosignature
specifications' example checkpoint with its cosignature (whose key is not published, so
only its framing, key ID and timestamp are checked). Ed25519 is deterministic: signing the
Go example text with the Go example key must give the Go example signature byte for byte.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.ledger import note
from scheduler.ledger.signing import Checkpoint, CheckpointFormatError, parse_checkpoint, parse_text

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n".encode()

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n".encode()

# c2sp.org/tlog-cosignature: the example checkpoint, the log's signature and a witness cosignature.
SOFA_TEXT = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SOFA_NOTE = SOFA_TEXT + (
    "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()


def go_key() -> Ed25519PrivateKey:
    blob = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert blob[0] == note.ALG_ED25519
    return Ed25519PrivateKey.from_private_bytes(blob[1:])


def test_the_go_reference_note_is_reproduced_byte_for_byte() -> None:
    key = go_key()
    sig = note.sign(GO_TEXT, "PeterNeumann", key)
    assert note.signed_note(GO_TEXT, sig) == GO_NOTE
    v = note.parse_vkey(GO_VKEY)
    assert v == note.verifier("PeterNeumann", key.public_key()) and v.vkey() == GO_VKEY and v.kid.hex() == "c74f20a3"
    text, sigs = note.split(GO_NOTE)
    assert text == GO_TEXT and note.valid(text, sigs[0], v)


def test_the_spec_verifier_key_example_verifies_its_note() -> None:
    v = note.parse_vkey(SPEC_VKEY)
    text, sigs = note.split(SPEC_NOTE)
    assert v.name == "example.com/foo" and text == b"This is an example message.\n"
    assert note.valid(text, sigs[0], v)
    assert not note.valid(text.replace(b"example", b"exemple"), sigs[0], v)


def test_the_spec_checkpoint_and_cosignature_parse() -> None:
    cp = parse_checkpoint(SOFA_NOTE)
    assert (cp.origin, cp.size, cp.text()) == ("example.com/behind-the-sofa", 20852163, SOFA_TEXT)
    log_sig, cosig = cp.signatures()
    assert log_sig.name == "example.com/behind-the-sofa" and len(log_sig.blob) == 64
    # timestamped_signature: u64 timestamp || 64-byte signature, after the 4-byte key ID
    assert cosig.name == "witness.example.com/w1" and len(cosig.blob) == 72
    assert int.from_bytes(cosig.blob[:8], "big") == 1679315147  # the spec's "time 1679315147"
    assert note.cosigned_message(SOFA_TEXT, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + SOFA_TEXT


def test_our_cosignatures_use_type_0x04_key_ids_and_verify() -> None:
    key = Ed25519PrivateKey.generate()
    v = note.verifier("witness.example.com/w1", key.public_key(), note.ALG_COSIGNATURE_V1)
    sig = note.cosign(SOFA_TEXT, "witness.example.com/w1", key, 1679315147)
    assert sig.kid == note.key_hash("witness.example.com/w1", 0x04, note.raw_public(key.public_key()))
    assert note.cosignature_time(SOFA_TEXT, sig, v) == 1679315147
    assert note.cosignature_time(SOFA_TEXT.replace(b"20852163", b"20852164"), sig, v) is None
    assert note.parse_vkey(v.vkey()) == v and v.vkey().split("+")[2].startswith("B")  # 0x04 in base64


def test_our_checkpoints_are_c2sp_checkpoints() -> None:
    key = go_key()
    cp = Checkpoint("example.com/log42", 7, bytes(range(32)), ("mcsched-action " + "ab" * 32,)).signed(key)
    text, sigs = note.split(cp.note)
    assert text == b"example.com/log42\n7\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nmcsched-action " + b"ab" * 32 + b"\n"
    assert sigs[0].name == "example.com/log42"  # the key name is the origin
    assert parse_checkpoint(cp.note) == cp and cp.verified_by(note.verifier("example.com/log42", key.public_key()))


@pytest.mark.parametrize(
    "text",
    [b"o\n01\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", b"o\n1\nAAEC\n", b"o\n1\n\n", b"o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n", b"o\n-1\nx\n"],
    ids=["leading-zero", "short-root", "empty-root", "empty-extension", "negative"],
)
def test_malformed_checkpoint_text_is_refused(text: bytes) -> None:
    with pytest.raises(CheckpointFormatError):
        parse_text(text)


@pytest.mark.parametrize(
    "bad",
    [b"no signatures\n", GO_NOTE.replace("—".encode(), b"-"), GO_NOTE.replace(b"PeterNeumann x08", b"Peter+Neumann x08"), GO_NOTE[:-1], GO_NOTE.replace(b"\n", b"\r\n", 1)],
    ids=["unsigned", "hyphen", "plus-in-name", "no-final-newline", "control-char"],
)
def test_malformed_notes_are_refused(bad: bytes) -> None:
    with pytest.raises(note.NoteError):
        note.split(bad)

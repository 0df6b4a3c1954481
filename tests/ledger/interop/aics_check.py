"""Run by an interpreter that has aics-tlog installed (not ours): check our notes, cosignatures and proofs.

Input (JSON on stdin): ``log`` (our log vkey), ``witnesses`` (cosignature vkeys), ``quorum``,
``notes`` (every checkpoint note of a ledger, in order; the last one carries cosignature
lines), ``consistency`` ([old size, new size, old root b64, new root b64, [proof b64...]]
pairs) and ``proof`` (an ``audit prove`` document). Prints one line; exit 0 when all hold.
"""

import base64
import json
import sys

from aics_tlog import parse_checkpoint, parse_note, parse_vkey, verify_checkpoint, verify_consistency, verify_leaf_inclusion


def main() -> int:
    doc = json.load(sys.stdin)
    log = parse_vkey(doc["log"])
    witnesses = [parse_vkey(w) for w in doc["witnesses"]]
    for i, text in enumerate(doc["notes"]):
        last = i == len(doc["notes"]) - 1
        res = verify_checkpoint(parse_note(text), log, witnesses if last else None, doc["quorum"] if last else 0, expected_origin=log.name)
        if not res.ok:
            print(f"FAIL: note {i}: {res.error}")
            return 1
        if last and res.cosignature_count < doc["quorum"]:
            print(f"FAIL: {res.cosignature_count} cosignatures")
            return 1
    for old, new, old_root, new_root, proof in doc["consistency"]:
        b = base64.b64decode
        if not verify_consistency(old, new, b(old_root), b(new_root), [b(h) for h in proof]):
            print(f"FAIL: consistency {old} -> {new}")
            return 1
    proof = doc["proof"]
    cp = parse_checkpoint(parse_note(proof["checkpoint"]).text)
    for item in proof["records"]:
        path = [bytes.fromhex(h) for h in item["inclusion"]]
        if not verify_leaf_inclusion(item["record"].encode(), item["seq"] - 1, cp.size, path, cp.root):
            print(f"FAIL: inclusion of record {item['seq']}")
            return 1
    print(f"OK: {len(doc['notes'])} checkpoints, {len(doc['consistency'])} consistency proofs, {len(proof['records'])} inclusion proofs")
    return 0


sys.exit(main())

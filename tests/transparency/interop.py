"""Check syncgate's Merkle proofs and signed checkpoint with code syncgate's team did not write.

Reads the JSON file named by the first argument (written by tests/transparency.rs):
- "inclusion": proofs to check with sigstore's RFC 6962 verifier
  (sigstore._internal.merkle.verify_merkle_inclusion, the function sigstore runs on every Rekor
  entry), each with "valid": whether it must pass;
- "checkpoint": a C2SP signed note, the signer's name and raw Ed25519 public key, checked with
  pyca/cryptography;
- "cosigner": a witness's name and Ed25519 seed: this script co-signs the checkpoint as a C2SP
  tlog-cosignature witness would (pyca/cryptography signing, the format written here from the
  specification) and prints the witness's verifier key and co-signature line for syncgate's
  verifier to judge.

Prints one line per check and "interop ok" at the end; exits non-zero on the first surprise.
"""

import base64
import hashlib
import json
import sys
from types import SimpleNamespace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sigstore._internal.merkle import verify_merkle_inclusion
from sigstore.errors import VerificationError


def entry(case):
    """The shape verify_merkle_inclusion reads from a Rekor entry."""
    proof = SimpleNamespace(
        log_index=case["index"],
        tree_size=case["size"],
        hashes=[bytes.fromhex(h) for h in case["hashes"]],
        root_hash=bytes.fromhex(case["root"]),
    )
    inner = SimpleNamespace(
        inclusion_proof=proof,
        canonicalized_body=base64.b64decode(case["leaf"]),
    )
    return SimpleNamespace(_inner=inner)


def check_inclusion(cases):
    for case in cases:
        try:
            verify_merkle_inclusion(entry(case))
            passed = True
        except VerificationError:
            passed = False
        if passed != case["valid"]:
            sys.exit(f"sigstore says {passed} for {case['name']}, expected {case['valid']}")
        print(f"inclusion {case['name']}: {'verified' if passed else 'refused'}")


def check_checkpoint(checkpoint):
    note = checkpoint["note"]
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    public = bytes.fromhex(checkpoint["public_key"])
    name = checkpoint["name"]
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    key = Ed25519PublicKey.from_public_bytes(public)
    checked = 0
    for line in signatures.rstrip("\n").split("\n"):
        dash, signer, blob = line.split(" ")
        blob = base64.b64decode(blob)
        if dash != "\u2014" or signer != name or blob[:4] != key_id:
            continue
        for body, expect in ((text, True), (text.replace("\n", "\n ", 1), False)):
            try:
                key.verify(blob[4:], body.encode())
                ok = True
            except InvalidSignature:
                ok = False
            if ok != expect:
                sys.exit(f"cryptography says {ok} for the checkpoint (altered: {not expect})")
        checked += 1
    if checked != 1:
        sys.exit(f"{checked} signature lines by {name}, expected 1")
    origin, size, root = text.split("\n")[:3]
    if int(size) != checkpoint["size"] or base64.b64decode(root).hex() != checkpoint["root"]:
        sys.exit("the checkpoint's body is not the tree's size and root")
    print(f"checkpoint {origin} {size}: signature verified by cryptography")


def cosign(checkpoint, cosigner):
    """A C2SP tlog-cosignature v1 (Ed25519, type 0x04) of the checkpoint's text."""
    text = checkpoint["note"].rpartition("\n\n")[0] + "\n"
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(cosigner["seed"]))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    name = cosigner["name"]
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    timestamp = cosigner["time"]
    message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
    blob = key_id + timestamp.to_bytes(8, "big") + key.sign(message)
    typed = base64.b64encode(b"\x04" + public).decode()
    print(f"cosigner vkey {name}+{key_id.hex()}+{typed}")
    line = base64.b64encode(blob).decode()
    print(f"cosignature \u2014 {name} {line}")


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    check_inclusion(cases["inclusion"])
    check_checkpoint(cases["checkpoint"])
    cosign(cases["checkpoint"], cases["cosigner"])
    print("interop ok")


if __name__ == "__main__":
    main()

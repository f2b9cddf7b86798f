#!/usr/bin/env python3
"""Verify a Warden audit trail without Warden, from docs/AUDIT-FORMAT.md alone.

    python3 examples/verify_trail.py TRAIL --jwks JWKS

JWKS is the public key set of the instance that wrote the trail
(`warden audit jwks` there). Needs Python 3.8+ and the `cryptography`
package (for Ed25519); everything else is the standard library.

Exit status, as `warden audit verify`:
  0  intact and complete
  1  altered: the first bad line is named
  2  the trail or the JWKS cannot be read
  3  intact up to its last checkpoint, but incomplete
  4  a checkpoint is signed by a key that is not in the JWKS
"""

import argparse
import base64
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import time

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:  # pragma: no cover - reported, not raised
    sys.exit("error: verify_trail.py needs the `cryptography` package (pip install cryptography)")

GENESIS = "0" * 64

# Every field of a record, in the order a line holds them (docs/AUDIT-FORMAT.md).
FIELDS = [
    ("v", "int"),
    ("seq", "int"),
    ("prev", "str"),
    ("ts", "str"),
    ("event", "str"),
    ("invocation", "str"),
    ("task", "str"),
    ("agent", "str"),
    ("tool", "str"),
    ("identity", "str"),
    ("signer", "str"),
    ("capability", "str"),
    ("action", "str"),
    ("resource", "str"),
    ("decision", "str"),
    ("rule", "str"),
    ("reason", "str"),
    ("policies", "strs"),
    ("address", "str"),
    ("status", "u16"),
    ("bytes_out", "int"),
    ("bytes_in", "int"),
    ("duration_us", "int"),
    ("outcome", "str"),
    ("level", "str"),
    ("message", "str"),
    ("count", "int"),
    ("head", "str"),
    ("signature", "str"),
    ("key", "str"),
    ("hash", "str"),
]
ORDER = {name: i for i, (name, _) in enumerate(FIELDS)}
KIND = dict(FIELDS)
REQUIRED = ["v", "ts", "event", "invocation", "task", "tool", "identity"]
EVENTS = {
    "invocation.start",
    "decision",
    "log",
    "secret.issued",
    "secret.expired",
    "egress",
    "approval.requested",
    "outcome",
    "deploy",
    "checkpoint",
    "invocation.end",
}
HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{64})"\}\Z')
B64URL = re.compile(r"\A[A-Za-z0-9_-]*\Z")
KID = re.compile(r"\A[0-9a-f]{16}\Z")
# Warden cuts every field a tool or an agent fills, so its lines are a few
# KiB; a longer line is not one it wrote.
MAX_LINE = 64 << 20
# How long to wait for a writer's batch in progress to end (it takes
# milliseconds); a live trail read half-way through one ends in a torn line.
SETTLE = 5.0
MAX_JWKS = 1 << 20


class Tampered(Exception):
    pass


def b64url(text):
    """Decodes unpadded base64url strictly (what Warden writes, nothing else)."""
    if not isinstance(text, str) or not B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise ValueError("not canonical base64url")
    return raw


def shown(text):
    """A string from the trail or the command line, safe to print to a
    terminal: as it is if every character prints, else JSON-quoted (control
    characters, C1, bidi overrides and line separators escaped)."""
    if not isinstance(text, str):
        return json.dumps(text)
    return text if text.isprintable() else json.dumps(text)


def open_regular(path):
    """Opens a regular file without blocking on a FIFO or taking a terminal."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError("not a regular file")
    return f


def load_jwks(path):
    """The JWKS's Ed25519 keys by key id, each id recomputed from its key."""
    with open_regular(path) as f:
        text = f.read(MAX_JWKS + 1)
    if len(text) > MAX_JWKS:
        raise ValueError(f"larger than {MAX_JWKS >> 10} KiB")
    jwks = json.loads(text.decode("utf-8"))
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("expected an object with a `keys` array")
    keys = {}
    for k in jwks.get("keys", []):
        if not isinstance(k, dict):
            raise ValueError("expected each key to be an object")
        if k.get("kty") != "OKP" or k.get("crv") != "Ed25519":
            continue
        x = b64url(k.get("x"))
        if len(x) != 32:
            raise ValueError("x is not 32 bytes")
        kid = hashlib.sha256(x).hexdigest()[:16]
        if k.get("kid") is not None and k["kid"] != kid:
            raise ValueError(f"key id {shown(k['kid'])} does not match its key (expected {kid})")
        keys[kid] = Ed25519PublicKey.from_public_bytes(x)
    return keys


def trail_lines(f):
    """The trail's lines as (bytes without the newline, whether it had one),
    read once no writer is part-way through a batch, one at a time: a trail
    of any length costs the memory of its longest line."""
    until = time.monotonic() + SETTLE
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= until:
                break  # a stopped writer holds it: read the trail as it is
            time.sleep(0.005)
    # Writers only append: the length now bounds a read that ends on a
    # whole record, however long the read takes. The lock is let go at
    # once: writers wait for it (and give up after a while).
    left = os.fstat(f.fileno()).st_size
    fcntl.flock(f, fcntl.LOCK_UN)
    while left > 0:
        line = f.readline(min(left, MAX_LINE + 1))
        if not line:
            return
        left -= len(line)
        if line.endswith(b"\n"):
            yield line[:-1], True
        else:
            yield line, False
            if len(line) > MAX_LINE:
                return  # refused; nothing after it is read


def bounded_int(digits):
    """An integer of at most 20 digits (every one Warden writes fits in 64
    bits): a line of millions of digits would take quadratic time."""
    if len(digits) > 21:
        raise ValueError("an integer longer than any Warden writes")
    return int(digits)


def no_duplicates(pairs):
    seen = {}
    for name, value in pairs:
        if name in seen:
            raise Tampered(f"not a Warden audit record: duplicate field {json.dumps(name[:64])} (the record was edited)")
        seen[name] = value
    return seen


def typed(name, value):
    kind = KIND[name]
    if kind == "str":
        return isinstance(value, str)
    if kind == "strs":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return False
    return value <= (0xFFFF if kind == "u16" else 2**64 - 1)


def check_line(raw):
    """The record on one line and its hash, or Tampered with the reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Tampered("not UTF-8 text (the record was edited)")
    try:
        record = json.loads(text, object_pairs_hook=no_duplicates, parse_int=bounded_int)
    except (ValueError, RecursionError, MemoryError):
        raise Tampered("not a complete audit record (edited or truncated)")
    if not isinstance(record, dict):
        raise Tampered("not a complete audit record (edited or truncated)")
    for name in record:
        if name not in ORDER:
            raise Tampered(f"unknown field {json.dumps(name[:64])}: Warden writes no such field (the record was edited)")
    for name in REQUIRED:
        if name not in record:
            raise Tampered(f"not a Warden audit record: missing field `{name}` (the record was edited)")
    for name, value in record.items():
        if not typed(name, value):
            raise Tampered(f"not a Warden audit record: field `{name}` has the wrong type (the record was edited)")
    if record["event"] not in EVENTS:
        raise Tampered(f"not a Warden audit record: unknown event {json.dumps(record['event'][:64])} (the record was edited)")
    if record["v"] != 1:
        raise Tampered(f"record version {record['v']} is not one this verifier knows (expected 1)")
    # What Warden writes for this record: its fields in FIELDS order, no
    # whitespace, JSON's short escapes, other control characters as \u00xx
    # (lower-case hex), everything else as UTF-8.
    ordered = {name: record[name] for name in sorted(record, key=ORDER.get)}
    try:
        canonical = json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        canonical = b""
    if canonical != raw:
        column = next((i for i, (a, b) in enumerate(zip(canonical, raw)) if a != b), min(len(canonical), len(raw))) + 1
        raise Tampered(
            f"not in the exact form Warden writes (whitespace, field order or escaping differs at column {column}): the record was edited"
        )
    tail = HASH_TAIL.search(raw)
    if tail is None:
        raise Tampered("has no hash (the record was edited)")
    digest = hashlib.sha256(raw[: tail.start()] + b"}").hexdigest()
    if digest != tail.group(1).decode():
        raise Tampered("its contents do not match its hash (the record was edited)")
    return record, digest


def verify(lines, keys):
    report = {
        "records": 0,
        "checkpoints": 0,
        "last_checkpoint": None,
        "uncovered": 0,
        "unfinished": [],
        "unknown_keys": [],
        "tampered": None,
    }
    head = GENESIS
    open_invocations = {}
    since = 0
    for i, (raw, whole) in enumerate(lines):
        line = i + 1
        try:
            if len(raw) > MAX_LINE:
                raise Tampered(f"a line of over {MAX_LINE >> 20} MiB: Warden writes no record that long (the trail was edited)")
            if not whole:
                raise Tampered("not a complete audit record (edited or truncated)")
            record, digest = check_line(raw)
            if record.get("seq") != i:
                found = record.get("seq", "none")
                raise Tampered(f"expected record #{i}, found #{found} (a record was removed, inserted or reordered)")
            if record.get("prev") != head:
                raise Tampered("does not follow the record before it (a record was removed, inserted or reordered)")
            if record["event"] == "checkpoint":
                if record.get("count") != i or record.get("head") != head:
                    raise Tampered("checkpoint does not state the records before it")
                kid, sig = record.get("key"), record.get("signature")
                if kid is None or sig is None:
                    raise Tampered("checkpoint is not signed (no key or signature)")
                if not KID.match(kid):
                    raise Tampered("checkpoint names a key that is not 16 lower-case hex digits (the record was edited)")
                if kid not in keys:
                    if all(k["kid"] != kid for k in report["unknown_keys"]):
                        report["unknown_keys"].append({"line": line, "kid": kid})
                else:
                    message = f"warden-audit-checkpoint/1 {i} {head}".encode()
                    try:
                        signature = b64url(sig)
                        if len(signature) != 64:
                            raise ValueError("not 64 bytes")
                        keys[kid].verify(signature, message)
                    except (ValueError, InvalidSignature):
                        raise Tampered(f"checkpoint signature does not verify with key {kid}, which it names")
        except Tampered as t:
            report["tampered"] = {"line": line, "reason": str(t)}
            break
        if record["event"] == "checkpoint":
            report["checkpoints"] += 1
            report["last_checkpoint"] = line
            since = 0
        else:
            since += 1
        if record["event"] == "invocation.start":
            open_invocations[record["invocation"]] = True
        elif record["event"] == "invocation.end":
            open_invocations.pop(record["invocation"], None)
        head = digest
        report["records"] += 1
    report["uncovered"] = since
    report["unfinished"] = sorted(open_invocations)
    return report


CLOSED = 141  # as a shell reports a process ended by SIGPIPE


class Out:
    """stdout and stderr that a closed pipe does not turn into a traceback
    (nor its status into 1, "altered")."""

    closed = False

    @classmethod
    def say(cls, text, stream=None):
        stream = stream or sys.stdout
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            if stream is sys.stdout:
                cls.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())

    @classmethod
    def err(cls, text):
        cls.say(text, sys.stderr)


def main():
    parser = argparse.ArgumentParser(description="Verify a Warden audit trail (docs/AUDIT-FORMAT.md).")
    parser.add_argument("trail")
    parser.add_argument("--jwks", required=True, help="the public key set of the instance that wrote the trail")
    args = parser.parse_args()
    name = shown(args.trail)
    try:
        keys = load_jwks(args.jwks)
    except Exception as e:  # whatever is wrong with it, it is not the trail's fault: 2
        Out.err(f"error: {shown(args.jwks)}: not a usable JWKS: {shown(str(e))}")
        return 2
    try:
        with open_regular(args.trail) as f:
            report = verify(trail_lines(f), keys)
    except OSError as e:
        Out.err(f"error: cannot read {name}: {e.strerror or e}")
        return 2
    t = report["tampered"]
    # Errors first, on stderr: said even when stdout cannot be.
    if t is not None:
        Out.err(f"error: {name}:{t['line']}: {shown(t['reason'])}")
        Out.say(f"{name}: intact up to line {t['line'] - 1}")
        return 1
    if report["unknown_keys"]:
        for k in report["unknown_keys"]:
            Out.err(
                f"error: {name}:{k['line']}: checkpoint signed by key {shown(k['kid'])}, which is not one of the known keys; pass its JWKS with --jwks"
            )
        Out.say(f"{name}: chain intact ({report['records']} records), but its checkpoints' signatures cannot be checked")
        return 4
    if report["uncovered"] == 0 and not report["unfinished"]:
        Out.say(f"{name}: ok, {report['records']} records, {report['checkpoints']} signed checkpoints, every invocation ended")
        return 0
    if report["last_checkpoint"] is None:
        Out.say(f"{name}: chain intact, but no checkpoint yet")
    else:
        Out.say(f"{name}: intact and signed up to its last checkpoint (line {report['last_checkpoint']})")
    if report["uncovered"]:
        Out.say(f"warning: {report['uncovered']} records after the last checkpoint are not covered by a signature")
    for inv in report["unfinished"]:
        Out.say(f"warning: invocation {inv!r} has no end record (unfinished)")
    return 3


if __name__ == "__main__":
    status = main()
    # A verdict of altered (1) or an unknown key (4) outranks a closed
    # stdout, as in `warden audit verify`; otherwise a closed pipe says so.
    sys.exit(CLOSED if Out.closed and status not in (1, 4) else status)

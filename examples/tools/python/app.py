"""file-report: a Warden tool in Python, built with componentize-py.

Reads a text file through the `workspace` handle and reports its size and
lines; with `url`, fetches that URL through the host, attaching the granted
secret named by `secret` as `Authorization: Bearer ...` by reference (the
tool holds a handle to the secret, never its value); with `save`, writes the
report into the workspace too (which needs the write right).

Its output is byte for byte what examples/tools/js/app.js returns for the
same input, and .ci/polyglot checks both against the same grants.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import guest
from wit_world.imports import fs, http, log, secrets

NAME = "file-report"
VERSION = "0.1.0"
DESCRIPTION = (
    "Report a workspace file's size and lines; optionally fetch a URL "
    "authenticated with a granted secret (by reference) and save the report."
)

INPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "A text file, relative to the workspace."},
        "url": {"type": "string", "description": "An http(s) URL inside the egress grant to GET."},
        "secret": {
            "type": "string",
            "description": "A granted secret to send to `url` as a bearer token, by reference.",
        },
        "save": {
            "type": "string",
            "description": "Also write the report to this path in the workspace (needs write).",
        },
    },
    "required": ["path"],
    "additionalProperties": False,
}

OUTPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "bytes": {"type": "integer", "minimum": 0},
        "lines": {"type": "integer", "minimum": 0},
        "first_line": {"type": "string"},
        "fetched": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "body": {"type": "string"},
            },
            "required": ["status", "body"],
        },
    },
    "required": ["path", "bytes", "lines", "first_line"],
}


def dumps(value) -> str:
    # Compact and UTF-8, as JSON.stringify writes it.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def fail(kind: guest.ErrorKind, message: str) -> Err:
    return Err(guest.ToolError(kind=kind, message=message))


def code_name(code) -> str:
    """The WIT name of an error code: `NOT_FOUND` -> `not-found`."""
    return code.name.lower().replace("_", "-")


def tool_error(e) -> Err:
    """Maps a host error the way the Rust SDK does: a denial keeps the
    host's message as it is, so it reads the same in every language."""
    err = e.value
    if isinstance(err, fs.Error):
        if err.code == fs.ErrorCode.DENIED:
            return fail(guest.ErrorKind.DENIED, err.message)
        if err.code == fs.ErrorCode.NOT_FOUND:
            return fail(guest.ErrorKind.NOT_FOUND, err.message)
        if err.code == fs.ErrorCode.INVALID_PATH:
            return fail(guest.ErrorKind.INVALID_INPUT, f"{code_name(err.code)}: {err.message}")
    elif isinstance(err, secrets.Error):
        if err.code == secrets.ErrorCode.DENIED:
            return fail(guest.ErrorKind.DENIED, f"{code_name(err.code)}: {err.message}")
    elif isinstance(err, http.Error):
        if err.code == http.ErrorCode.DENIED:
            return fail(guest.ErrorKind.DENIED, err.message)
        if err.code == http.ErrorCode.INVALID_REQUEST:
            return fail(guest.ErrorKind.INVALID_INPUT, f"{code_name(err.code)}: {err.message}")
    else:
        return fail(guest.ErrorKind.FAILED, str(err))
    return fail(guest.ErrorKind.FAILED, f"{code_name(err.code)}: {err.message}")


def count_lines(data: bytes) -> int:
    """Lines as Rust's `str::lines` counts them: a last line needs no `\\n`."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def report(params: dict) -> dict:
    workspace = fs.open("workspace")
    path = params["path"]
    data = workspace.read(path)
    # Counted on the bytes, and only the first line decoded, so a file as
    # large as a host call may carry fits the default memory.
    out = {
        "path": path,
        "bytes": len(data),
        "lines": count_lines(data),
        "first_line": data.split(b"\n", 1)[0].decode("utf-8", errors="replace"),
    }
    if "url" in params:
        # A handle to the secret: its value never enters this instance.
        bearer = secrets.get(params["secret"]) if "secret" in params else None
        request = http.Request(method="GET", url=params["url"], headers=[], body=None)
        response = http.send(request, bearer)
        out["fetched"] = {
            "status": response.status,
            "body": response.body.decode("utf-8", errors="replace"),
        }
    if "save" in params:
        workspace.write(params["save"], dumps(out).encode("utf-8"))
    log.log(log.Level.INFO, f"reported on {path}")
    return out


class Guest(exports.Guest):
    def describe(self) -> guest.ToolInfo:
        return guest.ToolInfo(
            name=NAME,
            version=VERSION,
            description=DESCRIPTION,
            input_schema=dumps(INPUT_SCHEMA),
            output_schema=dumps(OUTPUT_SCHEMA),
            handles=[
                guest.HandleSpec(
                    name="workspace",
                    rights=fs.Rights.READ,
                    description="the file to report on (write, only to save the report)",
                )
            ],
        )

    def invoke(self, input: str) -> str:
        # The host has checked `input` against INPUT_SCHEMA before this runs.
        params = json.loads(input)
        try:
            return dumps(report(params))
        except Err as e:
            raise tool_error(e)

#!/usr/bin/env python3
"""List Warden's tools and call one, with the official `mcp` client package.

    python3 -m pip install mcp
    python3 examples/mcp/client.py DEMO_DIR [WARDEN_BINARY]

DEMO_DIR is a layout written by `warden demo --dir DEMO_DIR` (manifest,
tools, workspace). Warden runs as `warden serve --stdio` under the task
grant in examples/mcp/task.toml; the script lists the tools with their
hints, reads README.md through `read-files`, and shows that a write the
grant does not allow comes back as a tool error.
"""

import asyncio
import json
import pathlib
import shutil
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main(demo: pathlib.Path, warden: str) -> int:
    here = pathlib.Path(__file__).resolve().parent
    task = demo / "mcp-task.toml"
    # The task file's paths are relative to it: keep it next to the layout.
    task.write_text((here / "task.toml").read_text())
    server = StdioServerParameters(
        command=warden,
        args=[
            "serve", "--stdio",
            "--manifest", str(demo / "manifest.toml"),
            "--grants", str(task),
            "--audit", str(demo / "mcp-audit.jsonl"),
        ],
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            for t in tools:
                hints = t.annotations
                print(f"tool {t.name:<16} read-only={hints.read_only_hint} destructive={hints.destructive_hint}  {t.description}")

            result = await session.call_tool("read-files", {"paths": ["README.md"]})
            assert not result.is_error, result
            entry = result.structured_content["entries"][0]
            print(f"read-files README.md: {entry['content']!r}")

            denied = await session.call_tool(
                "write-file", {"path": "README.md", "content": "overwritten"}
            )
            assert denied.is_error, denied
            print(f"write-file README.md: {denied.content[0].text}")
            meta = (result.meta or {}).get("warden", {})
            print(f"invocation {meta.get('invocation')} of {meta.get('identity', '')[:19]}…, task {meta.get('task')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    binary = sys.argv[2] if len(sys.argv) > 2 else (shutil.which("warden") or "warden")
    sys.exit(asyncio.run(main(pathlib.Path(sys.argv[1]).resolve(), binary)))

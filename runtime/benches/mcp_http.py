#!/usr/bin/env python3
"""MCP over streamable HTTP, driven the way common clients drive it.

Standard library only. Each client is one thread holding one persistent
keep-alive `http.client.HTTPConnection`: `initialize`, then
`notifications/initialized`, then `tools/call` after `tools/call` in a closed
loop. Clients are spread over several processes so the GIL is not the limit.
Such a client sends each request in one write and delays its ACKs, so a
server that writes an answer in pieces without TCP_NODELAY stalls ~40 ms per
call (Nagle's algorithm waiting for the delayed ACK); a Rust client that
reads and writes differently never sees it.

Prints one JSON object: calls, calls/s, median/p90/p99 latency (ms), errors
and, with --pid, the server's CPU per call (utime + stime of /proc/PID/stat
over the timed section, divided by the calls in it).

    mcp_http.py --url http://127.0.0.1:PORT/mcp --pid PID --clients 64
    mcp_http.py --serve target/release/warden --manifest M --grants G --clients 8 \\
        --max-median-ms 20          # exits 1 when the median is above 20 ms

--floor talks to a server that echoes the request body (no MCP): the floor
for any HTTP server on this machine with this client.
"""

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

PROTOCOL = "2025-06-18"


def cpu_seconds(pid):
    """utime + stime of process `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """One MCP client on one keep-alive connection."""

    def __init__(self, url, token, floor):
        u = urllib.parse.urlsplit(url)
        self.path = u.path or "/"
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.floor = floor
        self.next_id = 0

    def post(self, message):
        body = json.dumps(message).encode()
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status not in (200, 202):
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return r, data

    def request(self, method, params):
        self.next_id += 1
        rid = self.next_id
        r, data = self.post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        if self.floor:
            return r, json.loads(data)
        kind = (r.getheader("Content-Type") or "").split(";")[0].strip()
        if kind == "text/event-stream":
            # The answer is the `data:` event whose id is ours.
            for line in data.decode().splitlines():
                if line.startswith("data:") and line[5:].strip():
                    m = json.loads(line[5:])
                    if m.get("id") == rid:
                        return r, m
            raise RuntimeError(f"no answer to request {rid} in the event stream: {data[:200]!r}")
        m = json.loads(data)
        if m.get("id") != rid:
            raise RuntimeError(f"answer to {m.get('id')}, expected {rid}")
        return r, m

    def initialize(self):
        r, m = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "mcp_http.py", "version": "1"},
            },
        )
        if self.floor:
            return
        if "result" not in m:
            raise RuntimeError(f"initialize failed: {m}")
        session = r.getheader("Mcp-Session-Id")
        if session:
            self.headers["Mcp-Session-Id"] = session
        self.headers["MCP-Protocol-Version"] = m["result"]["protocolVersion"]
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, tool, arguments):
        _, m = self.request("tools/call", {"name": tool, "arguments": arguments})
        if self.floor:
            return True
        return "result" in m and not m["result"].get("isError")


def arguments(args, message):
    """The call's arguments: --arguments, or echo's with a fresh message."""
    return args.arguments if args.arguments is not None else {"message": message}


def client_thread(args, start, stop, deadline, out):
    latencies, errors = [], 0
    try:
        c = Client(args.url, args.token, args.floor)
        c.initialize()
        for i in range(args.warmup):
            c.call(args.tool, arguments(args, f"w{i}"))
    except Exception as e:  # noqa: BLE001 (reported, counted)
        out.append(([], 1, f"set-up: {e}"))
        start.wait()
        stop.wait()
        return
    start.wait()
    i, why = 0, None
    # The parent sets the deadline once everyone is past `start`.
    while time.monotonic() < deadline.value:
        t = time.perf_counter()
        try:
            ok = c.call(args.tool, arguments(args, f"m{i}"))
        except Exception as e:  # noqa: BLE001
            ok, why = False, str(e)
            c.conn.close()
        latencies.append(time.perf_counter() - t)
        errors += not ok
        i += 1
    stop.wait()
    c.conn.close()
    out.append((latencies, errors, why))


def client_process(args, n, start, stop, deadline, queue):
    out = []
    threads = [
        threading.Thread(target=client_thread, args=(args, start, stop, deadline, out))
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = [x for lat, _, _ in out for x in lat]
    errors = sum(e for _, e, _ in out)
    why = next((w for _, _, w in out if w), None)
    queue.put((latencies, errors, why))


def run(args):
    processes = args.processes or min(args.clients, max(2, 2 * (os.cpu_count() or 1)))
    processes = min(processes, args.clients)
    share = [args.clients // processes + (i < args.clients % processes) for i in range(processes)]
    start = mp.Barrier(args.clients + 1)
    stop = mp.Barrier(args.clients + 1)
    deadline = mp.RawValue("d", 1e18)
    queue = mp.Queue()
    procs = [
        mp.Process(target=client_process, args=(args, n, start, stop, deadline, queue), daemon=True)
        for n in share
    ]
    for p in procs:
        p.start()
    # Everyone is connected and warmed up: the timed section starts.
    start.wait(timeout=120)
    t0, c0 = time.monotonic(), cpu_seconds(args.pid) if args.pid else None
    deadline.value = t0 + args.duration
    stop.wait(timeout=args.duration + 120)
    t1, c1 = time.monotonic(), cpu_seconds(args.pid) if args.pid else None
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(x for lat, _, _ in results for x in lat)
    errors = sum(e for _, e, _ in results)
    why = next((w for _, _, w in results if w), None)
    calls = len(latencies)

    def pct(p):
        return latencies[min(calls - 1, round((calls - 1) * p))] * 1e3 if calls else float("nan")

    report = {
        "clients": args.clients,
        "processes": processes,
        "calls": calls,
        "errors": errors,
        "seconds": round(t1 - t0, 3),
        "calls_per_s": round(calls / (t1 - t0), 1),
        "median_ms": round(statistics.median(latencies) * 1e3, 3) if calls else None,
        "p90_ms": round(pct(0.90), 3),
        "p99_ms": round(pct(0.99), 3),
    }
    if args.pid and calls:
        report["server_cpu_us_per_call"] = round((c1 - c0) * 1e6 / calls, 1)
        report["server_cpu_cores"] = round((c1 - c0) / (t1 - t0), 2)
    if why:
        report["first_error"] = why
    return report


def serve(args):
    """Starts `warden serve --http 127.0.0.1:0`; returns the process and URL."""
    cmd = [args.serve]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    cmd += ["serve", "--http", "127.0.0.1:0", "--manifest", args.manifest, "--grants", args.grants]
    if args.audit:
        cmd += ["--audit", args.audit]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.match(r"warden: serving MCP at (\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1)
    raise SystemExit(f"error: {args.serve} exited ({p.wait()}) before serving")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="the MCP endpoint, e.g. http://127.0.0.1:8080/mcp")
    ap.add_argument("--pid", type=int, help="the server's process id (for its CPU per call)")
    ap.add_argument("--token", help="bearer token")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--processes", type=int, help="client processes (default: 2 per core)")
    ap.add_argument("--duration", type=float, default=3.0, help="timed seconds")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls per client first")
    ap.add_argument("--tool", default="echo")
    ap.add_argument(
        "--arguments", type=json.loads, help='the tool\'s arguments (default: {"message": ...})'
    )
    ap.add_argument("--floor", action="store_true", help="the server echoes bodies; no MCP")
    ap.add_argument("--serve", metavar="WARDEN", help="start `WARDEN serve --http` and bench it")
    ap.add_argument("--manifest")
    ap.add_argument("--grants")
    ap.add_argument("--audit")
    ap.add_argument("--cache-dir")
    ap.add_argument("--max-median-ms", type=float, help="exit 1 when the median is higher")
    args = ap.parse_args()
    child = None
    if args.serve:
        if not (args.manifest and args.grants):
            ap.error("--serve needs --manifest and --grants")
        child, args.url = serve(args)
        args.pid = child.pid
    if not args.url:
        ap.error("--url or --serve is required")
    try:
        report = run(args)
    finally:
        if child:
            child.terminate()
            child.wait(timeout=30)
    print(json.dumps(report), flush=True)
    if report["errors"] or not report["calls"]:
        print(f"error: {report['errors']} failed calls: {report.get('first_error')}", file=sys.stderr)
        return 1
    limit = args.max_median_ms
    if limit is not None and report["median_ms"] > limit:
        print(
            f"error: median {report['median_ms']} ms with {args.clients} clients is over "
            f"{limit} ms (a ~40 ms median is the Nagle/delayed-ACK stall: TCP_NODELAY lost?)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What connections cost a server's memory (not CI): a real `mlserve serve` with default settings
(but server.timeout_keep_alive 60 s, so that no connection is closed while measured), N plain
sockets from this process.

1. RSS after warm-up; 2. with N idle connections; 3. after one request on each (all sent at
once, every answer read: `--request live` is GET /api/live, `predict` a POST /api/predict of one
text, which the model's queue admits or refuses by its budget, `batch` a POST
/api/predict/batch of 50); 4. once they are closed.

Usage: python bench/connections.py [--connections 2000] [--request live|predict|batch]
       [--src DIR] [--tag T]
Results: a summary on stdout and bench/out/connections-<request><tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from run import OUT, serve_sample, wait_http  # the bench's shared helpers

TEXT = "The staff were lovely and the room was spotless"
SETTLE_S = 1.0


def request_bytes(kind: str) -> bytes:
    if kind == "live":
        return b"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if kind == "batch":
        path, body = "/api/predict/batch", json.dumps({"texts": [TEXT] * 50}).encode()
    else:
        path, body = "/api/predict", json.dumps({"text": TEXT}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--request", choices=["live", "predict", "batch"], default="predict")
    parser.add_argument("--src", type=Path, default=None, help="serve the mlserve in DIR")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    OUT.mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="mlserve-connections-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env.update(MLSERVE_HOME=str(home), MLSERVE_SERVER__TIMEOUT_KEEP_ALIVE="60")
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    server, url = serve_sample(home, env)
    port = int(url.rsplit(":", 1)[1])
    socks: list[socket.socket] = []
    try:
        wait_http(url + "/api/ready")  # 503 while the model loads
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(50):  # warm-up: the model, the fast lane, the cost model
                client.post("/api/predict", json={"text": TEXT}).raise_for_status()
                client.get("/api/live").raise_for_status()
        proc = psutil.Process(server.pid)
        proc = next(iter(proc.children(recursive=True)), proc)

        def rss() -> float:
            return round(proc.memory_info().rss / 2**20, 2)

        time.sleep(SETTLE_S)
        base = rss()
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.connections)]
        time.sleep(SETTLE_S)
        idle = rss()
        payload = request_bytes(args.request)
        for sock in socks:
            sock.sendall(payload)
        statuses: dict[str, int] = {}
        for sock in socks:
            sock.settimeout(30)
            data = sock.recv(65536)
            status = data[9:12].decode("ascii", "replace")
            statuses[status] = statuses.get(status, 0) + 1
        time.sleep(SETTLE_S)
        answered = rss()
        for sock in socks:
            sock.close()
        socks = []
        time.sleep(2 * SETTLE_S)
        closed = rss()
    finally:
        for sock in socks:
            sock.close()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    n = args.connections
    result = {
        "connections": n,
        "request": args.request,
        "src": str(args.src) if args.src else "this checkout",
        "statuses": statuses,
        "rss_mb": {"base": base, "idle": idle, "answered": answered, "closed": closed},
        "growth_mb": {
            "idle": round(idle - base, 2),
            "answered": round(answered - base, 2),
            "closed": round(closed - base, 2),
        },
        "kb_per_idle_connection": round((idle - base) * 1024 / n, 2),
    }
    out = OUT / f"connections-{args.request}{args.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Behind a reverse proxy: `serve --root-path` under a path prefix the proxy strips, and the
client's address from X-Forwarded-For when the proxy is trusted (`--forwarded-allow-ips`)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support.data import populate, populated_settings
from support.net import free_port
from support.servers import running

from mlserve.server.app import create_app
from mlserve.server.middleware.fastlane import FastPredictMiddleware

PREFIX = "/ml"
FLOWER = [5.1, 3.5, 1.4, 0.2]
NGINX_CONF = """
worker_processes 1;
error_log {tmp}/error.log;
pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream mlserve {{
        server 127.0.0.1:{upstream};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        # As deploy/nginx/nginx.conf proxies, under a prefix that is stripped (the URI part
        # of proxy_pass): /ml/docs reaches the server as /docs.
        location {prefix}/ {{
            proxy_pass http://mlserve/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_in_front(tmp_path: Path, upstream: int) -> Iterator[str]:
    """A real nginx on a free port proxying {PREFIX}/ to 127.0.0.1:upstream; yields its URL."""
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not on PATH (apt-get install -y nginx-light); this test needs it")
    port = free_port()
    folder = tmp_path / "nginx"
    folder.mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, upstream=upstream, port=port, prefix=PREFIX))
    proc = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"), "-g",
         "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None, (folder / "error.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_root_path_must_be_a_path(cli: Any, assert_user_error: Any) -> None:
    result = cli("serve", "--root-path", "ml", "--port", "0")
    assert_user_error(result, "--root-path 'ml'", "starting with /")


def test_the_fast_lane_answers_under_a_root_path(tmp_path: Path) -> None:
    """uvicorn puts the prefix in front of the path (scope path /ml/api/predict, root_path
    /ml): the fast lane still takes the prediction rather than passing it to FastAPI."""
    routed: list[str] = []

    async def fastapi(scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])

    app = create_app(populated_settings(tmp_path))
    with TestClient(app) as client:  # the lifespan loads the models
        lane = FastPredictMiddleware(fastapi, app_state=app.state.mlserve)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"features": [5.1, 3.5, 1.4, 0.2]}'}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": f"{PREFIX}/api/predict",
            "raw_path": f"{PREFIX}/api/predict".encode(),
            "root_path": PREFIX,
            "query_string": b"model=iris",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 50000),
            "state": {},
        }
        assert client.portal is not None
        client.portal.call(lane, scope, receive, send)  # on the app's own event loop
    assert routed == []
    assert sent[0]["status"] == 200, sent


def test_served_under_a_prefix_behind_nginx(tmp_path: Path) -> None:
    """Through a real nginx that strips /ml: the docs page, the OpenAPI document and the
    Swagger assets it links, a prediction (the fast lane) and readiness, all under /ml."""
    populate(tmp_path / "registry")
    with (
        running(tmp_path / "registry", tmp_path / "home", args=["--root-path", PREFIX]) as server,
        nginx_in_front(tmp_path, server.port) as proxy,
        httpx.Client(base_url=proxy + PREFIX, timeout=10) as client,
    ):
        docs = client.get("/docs")
        assert docs.status_code == 200, docs.text
        assert f"'{PREFIX}/openapi.json'" in docs.text or f'"{PREFIX}/openapi.json"' in docs.text
        assert f"{PREFIX}/docs/static/swagger-ui-bundle.js" in docs.text

        openapi = client.get("/openapi.json")
        assert openapi.status_code == 200
        assert {"url": PREFIX} in openapi.json()["servers"]
        assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
        redoc = client.get("/redoc")
        assert redoc.status_code == 200 and f"{PREFIX}/openapi.json" in redoc.text

        answer = client.post("/api/predict", params={"model": "iris"}, json={"features": FLOWER})
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"] == "setosa"
        assert client.get("/api/ready").status_code == 200
        # Probes reach the pod directly, without the proxy: no prefix there.
        assert server.get("/api/ready").status_code == 200


RATE_LIMIT = {  # 5 at once, then one every 100 s: no refill between two requests
    "MLSERVE_RATE_LIMIT__ENABLED": "true",
    "MLSERVE_RATE_LIMIT__BURST": "5",
    "MLSERVE_RATE_LIMIT__RATE": "0.01",
}


def remaining(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["x-ratelimit-remaining"])


@pytest.mark.parametrize(
    ("args", "separate"),
    [([], True), (["--forwarded-allow-ips", "192.0.2.1"], False)],
    ids=["nginx-trusted", "nginx-not-trusted"],
)
def test_the_forwarded_client_address_keys_the_rate_limit(
    tmp_path: Path, args: list[str], separate: bool
) -> None:
    """nginx on 127.0.0.1 (trusted by default) appends the address it saw to X-Forwarded-For:
    two clients named there get a bucket each. With only another proxy trusted, the header is
    ignored and both count against nginx's own address."""
    populate(tmp_path / "registry")
    with (
        running(tmp_path / "registry", tmp_path / "home", args=args, env=RATE_LIMIT) as server,
        nginx_in_front(tmp_path, server.port) as proxy,
        httpx.Client(base_url=proxy + PREFIX, timeout=10) as client,
    ):

        def predict(client_address: str) -> httpx.Response:
            return client.post(
                "/api/predict",
                params={"model": "iris"},
                json={"features": FLOWER},
                headers={"X-Forwarded-For": client_address},
            )

        first = remaining(predict("203.0.113.7"))
        second = remaining(predict("198.51.100.9"))
    if separate:
        assert (first, second) == (4, 4)
    else:
        assert (first, second) == (4, 3)

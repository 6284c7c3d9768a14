"""What a web page or a local caller can change: V2 repository load and unload are off unless
server.model_control = "explicit", admin-only once auth is on, and no state-changing route reads
a body declared as anything but JSON — auth on or off — so a form post or a text/plain "simple"
cross-origin request changes nothing (SECURITY.md, "Exposure by default")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.data import populated_settings

from mlserve.keys import KeyStore
from mlserve.server.app import create_app
from mlserve.server.auth import AccessPolicy

FORM = {"content-type": "application/x-www-form-urlencoded"}
TEXT = {"content-type": "text/plain;charset=UTF-8"}  # what fetch() sends with a string body


class Server(TestClient):
    """A started app, and the keys made for it ({"predict": ..., "admin": ...}; none: auth off)."""

    keys: dict[str, str]

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """start(model_control, auth=False): a server over sentiment and iris."""
    with ExitStack() as stack:

        def build(model_control: str, *, auth: bool = False) -> Server:
            settings = populated_settings(
                tmp_path / f"{model_control}-{auth}",
                server={"model_control": model_control},
                jobs={"concurrency": 0},
                traffic={"watch_interval_s": 0},
            )
            keys: dict[str, str] = {}
            if auth:
                store = KeyStore(settings.keys_file)
                keys = {r: store.create(role=r, name=r).key for r in ("predict", "admin")}
            server = Server(create_app(settings), raise_server_exceptions=False)
            server.keys = keys
            return stack.enter_context(server)

        yield build


def served(client: TestClient, headers: dict[str, str] | None = None) -> bool:
    return client.get("/v2/models/iris/ready", headers=headers).status_code == 200


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_load_and_unload_are_off_by_default(start: Callable[..., Server], auth: bool) -> None:
    client = start("none", auth=auth)
    headers = client.bearer("admin") if auth else {}  # not even an admin

    for action in ("unload", "load"):
        response = client.post(f"/v2/repository/models/iris/{action}", json={}, headers=headers)

        assert response.status_code == 403, response.text
        assert "server.model_control" in response.json()["error"]
    assert served(client, headers)
    index = client.post("/v2/repository/index", json={}, headers=headers)
    assert index.status_code == 200  # what is served stays readable


def test_with_auth_on_only_an_admin_may_load_and_unload(start: Callable[..., Server]) -> None:
    client = start("explicit", auth=True)

    anonymous = client.post("/v2/repository/models/iris/unload", json={})
    predict = client.post(
        "/v2/repository/models/iris/unload", json={}, headers=client.bearer("predict")
    )

    assert anonymous.status_code == 401
    assert predict.status_code == 403 and "admin" in predict.json()["error"]
    assert served(client, client.bearer("admin"))
    admin = client.bearer("admin")
    assert (
        client.post("/v2/repository/models/iris/unload", json={}, headers=admin).status_code == 200
    )
    assert not served(client, admin)
    assert client.post("/v2/repository/models/iris/load", json={}, headers=admin).status_code == 200
    assert served(client, admin)


def test_the_access_policy_makes_the_repository_admin_only() -> None:
    policy = AccessPolicy()
    for path in ("/v2/repository/index", "/v2/repository/models/iris/load"):
        assert policy.required("POST", path) == "admin"
    assert policy.required("POST", "/v2/repository/models/iris/unload") == "admin"


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
@pytest.mark.parametrize("headers", [FORM, TEXT], ids=["form", "text"])
def test_no_form_post_or_text_request_changes_anything(
    start: Callable[..., Server], auth: bool, headers: dict[str, str]
) -> None:
    # The requests a web page may send to 127.0.0.1 without a CORS preflight, with credentials
    # where auth is on (an admin's browser extension, say): refused whatever they hold.
    client = start("explicit", auth=auth)
    sent = {**headers, **(client.bearer("admin") if auth else {})}
    before = client.get("/api/models/iris", headers=sent).json()["all_aliases"]

    for body in (b"{}", b"", b"x=1"):
        unload = client.post("/v2/repository/models/iris/unload", content=body, headers=sent)
        reload = client.post("/api/models/iris/reload", content=body, headers=sent)
        alias = client.put("/api/models/iris/aliases/evil", content=b'{"version": 1}', headers=sent)

        assert unload.status_code == 400 and "Content-Type" in unload.json()["error"]
        for refused in (reload, alias):
            assert refused.status_code == 422, refused.text
            assert "Content-Type" in refused.json()["error"]["message"]
    assert served(client, sent)
    assert client.get("/api/models/iris", headers=sent).json()["all_aliases"] == before


def test_json_still_works_for_the_same_requests(start: Callable[..., Server]) -> None:
    client = start("explicit")

    assert client.post("/v2/repository/models/iris/unload", json={}).status_code == 200
    assert client.post("/v2/repository/models/iris/load", json={}).status_code == 200
    answer: Any = client.put("/api/models/iris/aliases/staging", json={"version": 1})
    assert answer.status_code == 200, answer.text
    assert client.post("/api/models/iris/reload").status_code == 200

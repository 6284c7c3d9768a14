"""/docs and /redoc load their scripts, styles and icon from the server itself (no CDN): the
pages work where the server has no internet, and the assets follow the docs' auth rule."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from mlserve.config import Settings
from mlserve.keys import KeyStore
from mlserve.schemas import ModelMetadata
from mlserve.server.auth import AccessPolicy

from .conftest import error_of

# Every URL a page makes the browser fetch: src=, href=, and the quoted URLs its script passes
# to Swagger UI / ReDoc (the schema, the OAuth2 redirect).
REFERENCES = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
SCRIPT_URLS = re.compile(r"""(?:url|spec-url|oauth2RedirectUrl)["']?\s*[:=]\s*["']([^"']+)["']""")


def fetched_urls(html: str) -> set[str]:
    return set(REFERENCES.findall(html)) | set(SCRIPT_URLS.findall(html))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_urls_of_the_server_and_each_answers(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient], page: str
) -> None:
    client = serve()

    html = client.get(page).text
    urls = fetched_urls(html)

    assert "/openapi.json" in urls
    assert any(u.startswith("/docs/static/") and u.endswith(".js") for u in urls), urls
    remote = [u for u in urls if re.match(r"^(?:[a-z]+:)?//", u, re.I)]
    assert remote == [], remote
    assert "fonts.googleapis" not in html and "cdn." not in html
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content, url


def test_swagger_ui_asks_no_outside_validator(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    html = serve().get("/docs").text
    assert '"validatorUrl": null' in html


def test_assets_have_their_types_and_are_compressed(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve()
    js = client.get("/docs/static/swagger-ui-bundle.js", headers={"accept-encoding": "gzip"})
    css = client.get("/docs/static/swagger-ui.css")

    assert js.status_code == css.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert js.headers["content-encoding"] == "gzip"
    assert css.headers["content-type"].startswith("text/css")
    # Nothing but the folder's files: not the package's source beside it (dots sent encoded,
    # as a client would not normalise them away), nor a route reached through the prefix.
    assert client.get("/docs/static/%2e%2e/docs.py").status_code == 404
    assert client.post("/docs/static/%2e%2e/%2e%2e/api/models/iris/reload").status_code == 405
    assert client.get("/docs/static/nothing.js").status_code == 404


def test_the_asset_path_follows_the_docs_rule() -> None:
    assert AccessPolicy().required("GET", "/docs/static/swagger-ui-bundle.js") == "open"
    closed = AccessPolicy(public_docs=False)
    assert closed.required("GET", "/docs/static/swagger-ui-bundle.js") == "predict"
    assert closed.required("GET", "/docs/staticfoo") == "predict"


def test_assets_need_a_key_when_the_docs_do(
    iris_meta: ModelMetadata,
    make_settings: Callable[..., Settings],
    serve: Callable[..., TestClient],
) -> None:
    key = KeyStore(make_settings().keys_file).create(role="predict", name="ci").key
    public = serve(auth={"public_docs": True})
    closed = serve(auth={"public_docs": False})
    path = "/docs/static/redoc.standalone.js"

    assert public.get(path).status_code == 200
    error_of(closed.get(path), 401, "unauthorized")
    assert closed.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200

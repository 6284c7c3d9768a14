"""`mlserve keys`: create, list and revoke API keys; hash a key for settings-based deployments."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from mlserve.cli._common import (
    ConfigOpt,
    JsonOpt,
    cli_errors,
    console,
    err_console,
    load_cli_settings,
    print_json,
)

app = typer.Typer(
    help="Create, list and revoke API keys (the server re-reads them within a second).",
    no_args_is_help=True,
)


class RoleChoice(StrEnum):
    predict = "predict"
    admin = "admin"


def _store(config: Any) -> Any:
    from mlserve.keys import KeyStore

    return KeyStore(load_cli_settings(config).keys_file)


def _when(moment: Any) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}Z"


def _record_json(record: Any, now: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "role": record.role,
        "status": record.status(now),
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "source": record.source,
    }


@app.command("create")
@cli_errors
def create(
    role: Annotated[
        RoleChoice,
        typer.Option(
            "--role", help="predict (predictions, model info) or admin (also reloads, jobs)."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="A unique name among active keys. Default: ROLE-<random>.", show_default=False
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            help="30d, 12h, 90m, a date 2026-12-31 (expires 00:00 UTC that day) or never.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once; only its sha256 is stored."""
    from mlserve.keys import parse_expiry

    expires_at = parse_expiry(expires) if expires else None
    store = _store(config)
    created = store.create(role=role.value, name=name, expires_at=expires_at)
    record = created.record
    if as_json:
        data = _record_json(record, record.created_at)
        data["key"] = created.key
        print_json(data)
    else:
        sys.stdout.write(created.key + "\n")
        sys.stdout.flush()
    until = f"expires {_when(record.expires_at)}" if record.expires_at else "no expiry"
    err_console.print(
        f"created key '{record.name}' (role {record.role}, {until}) in {store.path}; "
        "copy it now: it will not be shown again",
        markup=False,
    )


@app.command("list")
@cli_errors
def list_keys(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List keys (file and settings) with role, dates and status; never the keys or hashes."""
    from datetime import UTC, datetime

    from mlserve.keys import KeyStore, records_from_settings

    settings = load_cli_settings(config)
    store = KeyStore(settings.keys_file)
    records = [*store.list(), *records_from_settings(settings.auth)]
    now = datetime.now(UTC)
    if settings.redis.url is not None:
        records = _with_shared_revocations(settings, records)
    if as_json:
        print_json([_record_json(r, now) for r in records])
        return
    if not records:
        err_console.print(
            f"no API keys (in {store.path} or settings): auth is off; "
            "create one with `mlserve keys create --role predict`",
            markup=False,
        )
        return
    from rich.table import Table

    table = Table(title=f"API keys ({store.path})", title_justify="left")
    for column in ("name", "role", "status", "created", "expires", "source"):
        table.add_column(column)
    styles = {"active": "green", "expired": "yellow", "revoked": "red"}
    for r in records:
        status = r.status(now)
        table.add_row(
            r.name,
            r.role,
            f"[{styles[status]}]{status}[/]",
            _when(r.created_at),
            _when(r.expires_at),
            r.source,
        )
    console.print(table)


def _with_shared_revocations(settings: Any, records: list[Any]) -> list[Any]:
    """Mark the keys revoked in Redis as revoked (a warning when Redis cannot be read)."""
    from mlserve.keys import shared_revocations

    try:
        revoked = shared_revocations(settings)
    except Exception as exc:  # noqa: BLE001 - the local listing is still worth showing
        err_console.print(f"warning: cannot read the revocations in Redis ({exc})", markup=False)
        return records
    out = []
    for record in records:
        shared = revoked.get(record.sha256)
        if shared is not None and record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": shared.revoked_at})
        out.append(record)
    return out


@app.command("revoke")
@cli_errors
def revoke(
    name: Annotated[str, typer.Argument(help="Name of the active key to revoke.")],
    config: ConfigOpt = None,
) -> None:
    """Revoke a key: running servers refuse it within about a second.

    With redis.url set the revocation is also recorded in Redis, so every replica refuses the
    key whatever key file it reads; keys given in settings (auth.keys) can then be revoked too.
    """
    from datetime import UTC, datetime

    from mlserve.errors import NotFoundError, UsageError
    from mlserve.keys import KeyRecord, KeyStore, share_revocation

    settings = load_cli_settings(config)
    shared = settings.redis.url is not None
    entry = next((e for e in settings.auth.keys if e.name == name), None)
    if entry is not None:
        if not shared:
            raise UsageError(
                f"key '{name}' is defined in the settings (auth.keys); remove it there and "
                "restart (or set redis.url to revoke it for every replica at once)"
            )
        record = KeyRecord(
            name=entry.name,
            role=entry.role,
            sha256=entry.sha256,
            revoked_at=datetime.now(UTC),
            source="settings",
        )
        share_revocation(settings, record)
        err_console.print(
            f"revoked key '{name}' (role {record.role}) in Redis: every replica refuses it; "
            "remove it from auth.keys at the next deploy",
            markup=False,
        )
        return
    store = KeyStore(settings.keys_file)
    try:
        record = store.revoke(name)
    except NotFoundError:
        # Already revoked in the file: record it in Redis again (a previous run may have
        # found Redis unreachable).
        done = [r for r in store.list() if r.name == name and r.status() == "revoked"]
        if not shared or not done:
            raise
        share_revocation(settings, done[-1])
        err_console.print(f"key '{name}' was already revoked; recorded in Redis", markup=False)
        return
    where = " (key file and Redis)" if share_revocation(settings, record) else ""
    err_console.print(f"revoked key '{record.name}' (role {record.role}){where}", markup=False)


@app.command("hash")
@cli_errors
def hash_cmd() -> None:
    """Read a key from stdin and print its sha256, for auth.keys in settings or environment."""
    from mlserve.errors import UsageError
    from mlserve.keys import hash_key

    if sys.stdin.isatty():
        key = typer.prompt("key", hide_input=True, err=True)
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise UsageError('no key on stdin: pipe one in, e.g. `echo "$KEY" | mlserve keys hash`')
    sys.stdout.write(hash_key(key) + "\n")
    sys.stdout.flush()

"""`mlserve config`: write a starter settings file, show the effective settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlserve.cli._common import ConfigOpt, JsonOpt, cli_errors, console, print_json

app = typer.Typer(
    help="Write a starter settings file or show the effective settings.", no_args_is_help=True
)


def render_config_document() -> str:
    """A TOML file with every setting at its default, each preceded by its description."""
    import tomli_w

    from mlserve.config import Settings, default_config_document

    lines = [
        "# mlserve settings. Precedence: command-line flag > MLSERVE_SECTION__KEY environment",
        "# variable > this file > built-in default. Relative paths resolve against this file's",
        "# folder. Keys left out (or commented out) take their defaults.",
        "",
        '# home = "~/.mlserve"  # default registry and local state ($MLSERVE_HOME)',
    ]
    document = default_config_document()
    for section, values in document.items():
        model = Settings.model_fields[section].annotation
        fields = model.model_fields  # type: ignore[union-attr]
        lines += ["", f"[{section}]"]
        for key, field in fields.items():
            if field.description:
                lines.extend(f"# {line.strip()}" for line in field.description.splitlines())
            if key in values:
                value = values[key]
                if isinstance(value, dict) and not value:
                    lines.append(f"{key} = {{}}")  # tomli-w would open a [table] here
                else:
                    lines.append(tomli_w.dumps({key: value}).strip())
            else:
                lines.append(f"# {key} = ...  (unset by default)")
    return "\n".join(lines) + "\n"


@app.command("init")
@cli_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.", dir_okay=False)] = Path(
        "mlserve.toml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter settings file with every key, its default and what it does."""
    from mlserve.errors import ConfigError, UsageError

    if path.exists() and not force:
        raise UsageError(f"{path} already exists; use --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_config_document(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    console.print(f"wrote {path}")


@app.command("show")
@cli_errors
def show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings (secrets masked) and where each value came from."""
    from rich.table import Table

    from mlserve.config import load_settings_with_sources, settings_as_dict

    loaded = load_settings_with_sources(config)
    data = settings_as_dict(loaded.settings)
    if as_json:
        print_json(
            {
                "config_file": str(loaded.config_file) if loaded.config_file else None,
                "settings": data,
                "sources": loaded.sources,
            }
        )
        return
    table = Table(title=f"settings (file: {loaded.config_file or 'none'})", title_justify="left")
    table.add_column("key")
    table.add_column("value", overflow="fold")
    table.add_column("source")
    for dotted, source in loaded.sources.items():
        section, _, key = dotted.partition(".")
        value: Any = data[section][key] if key else data[section]
        table.add_row(dotted, _fmt(value), source.split(":", 1)[0])
    console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "[]"
    return str(value)

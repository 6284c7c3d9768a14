"""Settings: one pydantic-settings model, built once at the edge by load_settings()."""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from mlserve.config_file import find_config_file as find_config_file
from mlserve.config_file import read_toml as read_toml
from mlserve.errors import ConfigError

ENV_PREFIX = "MLSERVE_"

# The roles of API keys and JWTs; mlserve.keys.ROLES lists the same (a test pins it).
Role = Literal["predict", "admin"]


class Section(BaseModel):
    """A settings section: unknown keys are errors, every field is documented."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class RegistrySettings(Section):
    path: Path | None = None
    """Registry directory. Default: $MLSERVE_HOME/registry."""


class ServerSettings(Section):
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; binding elsewhere is a deliberate choice."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port to listen on (0 picks a free port)."""
    workers: int = Field(default=1, ge=1, le=64)
    """Number of server processes."""
    models: list[str] = Field(default_factory=list)
    """Model references to serve (name, name:3, name@alias). Empty: every model in the registry."""
    model_paths: list[str] = Field(default_factory=list)
    """Model files or MLflow directories served without a registry: "PATH" or "NAME=PATH"."""
    trusted_types: list[str] = Field(default_factory=list)
    """Types a model_paths .skops file may hold beyond skops' safe ones (trusting one runs its
    code); as `register --trust`."""
    default_model: str | None = None
    """Model used when a request names none. Unset: the only served model taking its input."""
    default_alias: str = Field(default="production", pattern=r"^[a-z0-9_-]+$")
    """Alias served for a bare model name; a model without it serves its latest version."""
    max_body_bytes: int = Field(default=2_097_152, ge=1024)
    """Largest accepted request body, in bytes (413 above)."""
    max_text_length: int = Field(default=10_000, ge=1)
    """Longest accepted text input, in characters (422 above)."""
    max_batch_items: int = Field(default=100, ge=1)
    """Most inputs accepted by one /api/predict/batch request."""
    max_header_line_bytes: int = Field(default=8192, ge=256)
    """Longest request URL (414 above) or header field, name and value (431 above), in bytes."""
    max_header_bytes: int = Field(default=65_536, ge=1024)
    """Largest request head (request line and headers), in bytes; 431 above, nothing more read."""
    max_headers: int = Field(default=100, ge=1)
    """Most header fields in one request (431 above)."""
    limit_concurrency: int = Field(default=2048, ge=0)
    """Open connections per process (0: no cap). A connection opened past it gets 503 (with
    Retry-After) and is closed; the ones under it go on being served. An idle connection
    holds ~4.5 KB; a client that reconnects at once after that 503 costs an accept and a close
    per request, so keep it above the connections you expect."""
    backlog: int = Field(default=4096, ge=1)
    """Connections the kernel holds until the server accepts them (the listen backlog; Linux
    caps it at net.core.somaxconn). Past it a client's connection stalls for seconds (TCP
    retries); it absorbs a burst of new connections larger than limit_concurrency."""
    events_per_turn: int = Field(default=32, ge=0)
    """Most ready sockets the event loop reads, and new connections it accepts, per turn
    before the requests already in flight go on (0: no limit, asyncio's way). Under overload
    the rest wait in the kernel, not in memory, and admitted requests finish sooner
    (docs/benchmarks.md)."""
    loop: Literal["asyncio", "uvloop"] = "asyncio"
    """Event loop: asyncio (default; serves many connections fairly) or uvloop (needs the
    uvloop package; with hundreds of busy connections some wait seconds, see
    docs/benchmarks.md)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS. Empty: no cross-origin access."""
    gzip_min_bytes: int = Field(default=1000, ge=0)
    """Responses larger than this are gzip-compressed when the client accepts it."""
    timeout_keep_alive: float = Field(default=5.0, gt=0)
    """Seconds an idle keep-alive connection stays open."""
    graceful_timeout: float = Field(default=10.0, gt=0)
    """Seconds in-flight requests get to finish on shutdown. Each shutdown step (jobs, models,
    Redis...) then gets this plus 5 s; one still running is logged with where it waits."""
    allow_unauthenticated: bool = False
    """Serve on a non-loopback address with auth off (no API keys, no JWT); refused otherwise."""
    model_control: Literal["none", "explicit"] = "none"
    """V2 repository load/unload: "none" refuses them (403); "explicit" allows them (admin role)."""
    max_loaded: int = Field(default=0, ge=0)
    """Most model versions loaded per process (0: no limit); the others load on demand."""
    memory_budget_mb: float = Field(default=0.0, ge=0)
    """Estimated MB of loaded models per process (0: no limit): docs/performance.md."""
    pinned_models: list[str] = Field(default_factory=list)
    """Models loaded at startup, never unloaded for max_loaded or memory_budget_mb."""


class BatchingSettings(Section):
    enabled: bool = True
    """Coalesce concurrent predictions for one model version into one vectorized call."""
    max_batch_size: int = Field(default=256, ge=1)
    """Most rows in one model call when coalescing requests (one request's rows stay together)."""
    max_wait_ms: float = Field(default=0.0, ge=0)
    """Extra wait for a fuller batch, in ms. 0: a lone request never waits on a timer."""
    max_queue: int = Field(default=1024, ge=1)
    """Most requests waiting per model version; beyond it requests get 503 at once."""
    max_queue_delay_ms: float = Field(default=500.0, ge=0)
    """Latency budget in ms: a request expected to wait longer for the model gets 503 at once."""


class ClientSettings(Section):
    url: str = "http://127.0.0.1:8000"
    """Server the predict, health-check and loadtest commands talk to."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for a response."""
    api_key: SecretStr | None = None
    """API key sent as a bearer token (also read from $MLSERVE_API_KEY)."""


class LoadtestSettings(Section):
    concurrency: int = Field(default=8, ge=1)
    """Closed-loop connections, when neither --concurrency nor --rate is given."""
    duration: float = Field(default=10.0, gt=0)
    """Seconds of measured load, when neither --duration nor --requests is given."""
    warmup: float = Field(default=0.0, ge=0)
    """Seconds of unmeasured load before measuring."""


class ApiKeyEntry(Section):
    name: str = Field(min_length=1, max_length=64)
    """Name of the key, as `mlserve keys list` shows it."""
    role: Role
    """predict (predictions, model info) or admin (also reloads, jobs)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex sha256 of the key (`mlserve keys hash` prints it); never the key itself."""
    expires_at: datetime | None = None
    """When the key stops working (a TOML or ISO 8601 date-time). Unset: never."""


class AuthSettings(Section):
    keys_file: Path | None = None
    """File holding API-key hashes (`mlserve keys`). Default: $MLSERVE_HOME/state/keys.json."""
    keys: list[ApiKeyEntry] = Field(default_factory=list)
    """Keys given as sha256 hashes, for deployments: [{name, role, sha256, expires_at?}]."""
    public_metrics: bool = True
    """Serve /metrics without a key (when auth is on)."""
    public_docs: bool = True
    """Serve /docs, /redoc and /openapi.json without a key (when auth is on)."""
    jwt_secret: SecretStr | None = None
    """HS256 secret for JWT bearer tokens (at least 32 bytes). Unset: no HS256 tokens."""
    jwt_public_key: Path | None = None
    """PEM file with the RS256 public key for JWT bearer tokens. Unset: no RS256 tokens."""
    jwt_audience: str | None = None
    """Required `aud` claim of JWTs, when set."""
    jwt_issuer: str | None = None
    """Required `iss` claim of JWTs, when set."""


class RoleLimit(Section):
    rate: float = Field(gt=0)
    """Requests per second a client with this role earns."""
    burst: int = Field(ge=1)
    """Bucket size for this role: the most requests sent at once."""


class RateLimitSettings(Section):
    enabled: bool = False
    """Limit requests per API key (or per client address when auth is off)."""
    rate: float = Field(default=50.0, gt=0)
    """Requests per second a client earns (token-bucket refill rate)."""
    burst: int = Field(default=100, ge=1)
    """Bucket size: the most requests a client may send at once."""
    roles: dict[Role, RoleLimit] = Field(default_factory=dict)
    """Per-role overrides of rate and burst, keyed by role: admin, predict."""


class CacheSettings(Section):
    enabled: bool = False
    """Cache predictions by (model, version, input); responses say X-Cache: hit|miss."""
    max_entries: int = Field(default=10_000, ge=1)
    """Most cached predictions (least recently used go first)."""
    ttl_s: float = Field(default=300.0, gt=0)
    """Seconds a cached prediction stays valid."""


class JobsSettings(Section):
    max_items: int = Field(default=100_000, ge=1)
    """Most inputs in one async job."""
    max_body_bytes: int = Field(default=67_108_864, ge=1024)
    """Largest body of an async job submission (JSON or upload), in bytes (413 above)."""
    chunk_size: int = Field(default=500, ge=1)
    """Inputs scored per step of a job (progress and resume granularity)."""
    ttl_s: float = Field(default=7 * 86400.0, gt=0)
    """Seconds a finished job and its results are kept."""
    lease_s: float = Field(default=30.0, gt=0)
    """A running job whose worker stops renewing its lease for this long is resumed elsewhere."""
    concurrency: int = Field(default=1, ge=0)
    """Jobs each server process works on at once (0: never here; with redis.url: mlserve worker)."""
    database: Path | None = None
    """SQLite job store. Default: $MLSERVE_HOME/state/jobs.sqlite3."""


class WorkerSettings(Section):
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of `mlserve worker`'s Prometheus /metrics (0: none; deploy/ uses 9101)."""


class TrafficSettings(Section):
    splits: dict[str, dict[str, float]] = Field(default_factory=dict)
    """A/B splits per model, version → weight, e.g. splits={sentiment={"3"=90, "4"=10}}."""
    shadow: dict[str, int] = Field(default_factory=dict)
    """Shadow version per model, sent a copy of live traffic, e.g. shadow={sentiment=5}."""
    watch_interval_s: float = Field(default=5.0, ge=0)
    """Seconds between registry checks for alias moves and new models (0: on reload only)."""
    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failed model calls that mark a version degraded (503 for the cooldown)."""
    failure_cooldown_s: float = Field(default=30.0, gt=0)
    """Seconds a degraded version fails fast before it is tried again."""
    rollout_interval_s: float = Field(default=1.0, gt=0, le=60)
    """Seconds between rollout rounds: each replica reports its counts; the lease holder judges."""


class RedisSettings(Section):
    url: SecretStr | None = None
    """Redis shared by replicas (needs the redis extra), e.g. redis://redis:6379/0. Unset: off."""
    key_prefix: str = Field(default="mlserve:", pattern=r"^[A-Za-z0-9_.:{}-]{0,64}$")
    """Prefix of every key and of the Celery queue: one per deployment sharing a Redis database."""
    socket_timeout_s: float = Field(default=1.0, gt=0)
    """Seconds to wait for a Redis reply; past it Redis counts as down (requests go on)."""
    connect_timeout_s: float = Field(default=1.0, gt=0)
    """Seconds to wait for a connection to Redis."""
    health_check_interval_s: float = Field(default=1.0, gt=0)
    """Seconds between background pings: how soon a lost or recovered Redis is noticed."""
    max_connections: int = Field(default=64, ge=1)
    """Most connections one process opens to Redis."""
    rate_limit_fail_open: bool = True
    """Redis down: true, limit with this process's own buckets; false, limited requests get 503."""


class FeedbackSettings(Section):
    enabled: bool = True
    """Remember predictions so true labels sent later (POST /api/feedback) give live quality."""
    retention_s: float = Field(default=7 * 86400.0, gt=0)
    """Seconds a prediction (and its label) is kept; feedback for an older one is a 404."""
    max_records: int = Field(default=1_000_000, ge=1)
    """Most predictions kept (the oldest go first); bounds the store's size."""
    database: Path | None = None
    """SQLite feedback store. Default: $MLSERVE_HOME/state/feedback.sqlite3 (Redis: redis.url)."""
    flush_interval_s: float = Field(default=0.25, gt=0)
    """Seconds between writes of buffered predictions to the store (one transaction each)."""
    buffer_size: int = Field(default=100_000, ge=1)
    """Most predictions waiting to be written; beyond it they are dropped and counted."""
    window: int = Field(default=1000, ge=1)
    """Rolling figures cover the last N labelled predictions of a version (?window= overrides)."""
    max_items: int = Field(default=1000, ge=1)
    """Most labels accepted by one POST /api/feedback request."""
    drift_window_s: float = Field(default=86400.0, gt=0)
    """Drift (PSI) compares the predictions of the last this many seconds with the hold-out's."""
    drift_min_predictions: int = Field(default=100, ge=1)
    """Fewer predictions than this in the drift window: no drift figure (too noisy)."""
    metrics_interval_s: float = Field(default=30.0, gt=0)
    """Seconds between refreshes of the live-accuracy and drift metrics."""


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level."""
    format: Literal["text", "json"] = "text"
    """text: readable lines; json: one JSON object per line (access logs included)."""
    access_log: bool = True
    """Log one line per HTTP request (method, path, status, duration, request id, model)."""


class TracingSettings(Section):
    enabled: bool = False
    """Trace each request and model call with OpenTelemetry (the otel extra), exported over
    OTLP/HTTP: where to and as what is the SDK's own environment (OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...). Log records then carry trace_id and span_id."""


# Set only while load_settings() builds a Settings, so the TOML layer sits below the environment.
_toml_layer: ContextVar[dict[str, Any]] = ContextVar("mlserve_toml_layer")


class _TomlLayer(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole layer

    def __call__(self) -> dict[str, Any]:
        return _toml_layer.get({})


class Settings(BaseSettings):
    """Effective settings: CLI flag > MLSERVE_SECTION__KEY env > TOML file > defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
        nested_model_default_partial_update=True,
    )

    home: Path = Field(default_factory=lambda: Path("~/.mlserve").expanduser())
    """Home of the default registry and local state ($MLSERVE_HOME)."""

    @field_validator("home", mode="before")
    @classmethod
    def _empty_home_is_unset(cls, value: Any) -> Any:
        # MLSERVE_HOME="" means the default, not "." (a registry scattered in the cwd).
        if isinstance(value, str) and not value.strip():
            return Path("~/.mlserve").expanduser()
        return value

    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    loadtest: LoadtestSettings = Field(default_factory=LoadtestSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlLayer(settings_cls))

    @property
    def registry_path(self) -> Path:
        return (self.registry.path or self.home / "registry").expanduser()

    @property
    def state_dir(self) -> Path:
        return (self.home / "state").expanduser()

    @property
    def keys_file(self) -> Path:
        return (self.auth.keys_file or self.state_dir / "keys.json").expanduser()

    @property
    def jobs_database(self) -> Path:
        return (self.jobs.database or self.state_dir / "jobs.sqlite3").expanduser()

    @property
    def feedback_database(self) -> Path:
        return (self.feedback.database or self.state_dir / "feedback.sqlite3").expanduser()


class LoadedSettings(typing.NamedTuple):
    settings: Settings
    config_file: Path | None
    sources: dict[str, str]


def _is_path_field(annotation: Any) -> bool:
    if annotation is Path:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return Path in typing.get_args(annotation)
    return False


def _section_models() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = ann
    return out


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to that file's folder."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(base / value)
        return value

    if "home" in data:
        data["home"] = fix(data["home"])
    server = data.get("server")
    if isinstance(server, dict) and isinstance(server.get("model_paths"), list):
        entries: list[Any] = []
        for entry in server["model_paths"]:
            if isinstance(entry, str):  # "NAME=PATH": only the path is relative
                name, path = split_model_path(entry)
                entries.append(fix(path) if name is None else f"{name}={fix(path)}")
            else:
                entries.append(entry)  # not a string: validation says so
        server["model_paths"] = entries
    for section, model in _section_models().items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        for key, field in model.model_fields.items():
            if key in values and _is_path_field(field.annotation):
                values[key] = fix(values[key])


def split_model_path(entry: str) -> tuple[str | None, str]:
    """A server.model_paths entry (`serve --model-path`): "NAME=PATH" when the text before the
    first '=' holds no path separator, else a PATH (./a=b.joblib for a file named a=b.joblib)."""
    name, sep, path = entry.partition("=")
    if sep and name and "/" not in name and "\\" not in name:
        return name, path
    return None, entry


def _leaf_keys(settings: Settings) -> Iterator[tuple[str, str | None]]:
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for key in type(value).model_fields:
                yield name, key
        else:
            yield name, None


def _env_has(section: str, key: str | None) -> bool:
    wanted = (ENV_PREFIX + section + (f"__{key}" if key else "")).upper()
    return any(k.upper() == wanted for k in os.environ)


def _clean_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Drop flags that were not given (None), keep nested dicts."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            inner = {k: v for k, v in value.items() if v is not None}
            if inner:
                out[key] = inner
        elif value is not None:
            out[key] = value
    return out


def _describe_validation_error(exc: ValidationError, origin: str) -> str:
    parts = []
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        loc = ".".join(p for p in path if p != "[key]")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting '{loc}'")
        elif path and path[-1] == "[key]":  # a bad key of a table, e.g. rate_limit.roles.admn
            parts.append(f"invalid key '{loc}': {err['msg']}")
        else:
            parts.append(f"invalid setting '{loc}': {err['msg']}")
    return f"{'; '.join(parts)} ({origin})"


def _env_value_is_json(name: str) -> bool:
    """Whether MLSERVE_SECTION[__KEY] is a list, table or section: the env gives those as JSON."""
    section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
    field = Settings.model_fields.get(section)
    if field is None:
        return False
    annotation = field.annotation
    if key:
        model = _section_models().get(section)
        inner = model.model_fields.get(key) if model is not None else None
        if inner is None or "__" in key:
            return False
        annotation = inner.annotation
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, (list, dict, BaseModel))


def _describe_settings_error(exc: SettingsError) -> str:
    """pydantic-settings names only the section of an undecodable variable: find the variable."""
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or not _env_value_is_json(name.upper()):
            continue
        try:
            json.loads(value)
        except ValueError as err:
            return (
                f"invalid environment variable {name}: not valid JSON ({err}); "
                'lists and tables are given as JSON, e.g. ["a", "b"] or {"key": 1}'
            )
    return f"invalid MLSERVE_* environment: {exc}"


def load_settings_with_sources(
    config_path: Path | str | None = None, **overrides: Any
) -> LoadedSettings:
    """Build Settings and report where each leaf value came from (flag, env, file, default)."""
    config_file = find_config_file(config_path)
    toml_data: dict[str, Any] = {}
    if config_file is not None:
        toml_data = read_toml(config_file)
        _resolve_relative_paths(toml_data, config_file.resolve().parent)
    flags = _clean_overrides(overrides)

    # Validate the file on its own first, so its errors name the file.
    if toml_data:
        try:
            _toml_only_model().model_validate(toml_data)
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc, f"in {config_file}")) from None

    token = _toml_layer.set(toml_data)
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        raise ConfigError(
            _describe_validation_error(exc, "from command-line flags or MLSERVE_* environment")
        ) from None
    except SettingsError as exc:  # an MLSERVE_* list or table that is not JSON
        raise ConfigError(_describe_settings_error(exc)) from None
    finally:
        _toml_layer.reset(token)

    sources: dict[str, str] = {}
    for section, key in _leaf_keys(settings):
        dotted = f"{section}.{key}" if key else section
        in_flags = section in flags and (key is None or key in flags[section])
        in_file = section in toml_data and (key is None or key in toml_data[section])
        if in_flags:
            sources[dotted] = "flag"
        elif _env_has(section, key):
            sources[dotted] = "env"
        elif in_file:
            sources[dotted] = f"file:{config_file}"
        else:
            sources[dotted] = "default"
    return LoadedSettings(settings, config_file, sources)


def load_settings(config_path: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings once; keyword overrides are sections of CLI flags (None = not given)."""
    return load_settings_with_sources(config_path, **overrides).settings


def _toml_only_model() -> type[BaseModel]:
    """Shape check of a config file alone: the same sections, every one optional."""
    fields: dict[str, Any] = {"home": (Path | None, None)}
    for name, model in _section_models().items():
        fields[name] = (model | None, None)
    return create_model("ConfigFile", __config__=ConfigDict(extra="forbid"), **fields)


def settings_as_dict(settings: Settings, *, mask_secrets: bool = True) -> dict[str, Any]:
    """JSON-friendly view of the settings; secrets become '********'."""
    data = settings.model_dump(mode="json")
    for section, key in _leaf_keys(settings):
        if key is None:
            continue
        value = getattr(getattr(settings, section), key)
        if isinstance(value, SecretStr):
            # model_dump masks secrets itself; unmasked callers need the real value.
            data[section][key] = "********" if mask_secrets else value.get_secret_value()
    return data


def default_config_document() -> dict[str, Any]:
    """The starter config written by `mlserve config init`: every section at its defaults."""
    doc: dict[str, Any] = {}
    for name, model in _section_models().items():
        # TOML has no null: a key left out means "use the default".
        doc[name] = {k: v for k, v in model().model_dump(mode="json").items() if v is not None}
    return doc

"""The Redis connection shared by replicas: one asyncio client per process and its up/down state.

Imported only when `redis.url` is set, so neither redis-py nor Celery is loaded otherwise. Every
user (rate limits, prediction cache, key revocations, the job store) asks `available` before a
call and reports connection failures with `failed(exc)`; a background ping notices when Redis
is back. Each change of state is logged once, never once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from mlserve.config import RedisSettings, Settings
from mlserve.errors import ConfigError, MlserveError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "REDIS_EXTRA",
    "UNAVAILABLE_REPLIES",
    "RedisBackend",
    "RedisCaller",
    "RedisRefusedError",
    "RedisUnavailableError",
    "RedisUnreachableError",
    "StateObserver",
    "display_url",
    "export_state",
    "is_connection_error",
    "redis_url",
    "refused_reply",
    "reply_text",
    "require_redis",
    "sync_client",
]

log = logging.getLogger(__name__)

REDIS_EXTRA = "pip install 'mlserve-sklearn[redis]'"
StateObserver = Callable[[bool], None]
# Redis answered, but cannot take commands now: for clients that is "unavailable", not a bug.
UNAVAILABLE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS")


def require_redis(*, celery: bool = False) -> None:
    """ConfigError naming the extra to install when redis-py (or Celery) is missing."""
    modules = ["redis", "celery"] if celery else ["redis"]
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"redis.url is set, but the {module} package is not installed: {REDIS_EXTRA}"
            ) from None


def redis_url(settings: Settings) -> str | None:
    """The configured URL (a secret: it may hold a password), or None when Redis is off."""
    url = settings.redis.url
    return url.get_secret_value() if url is not None else None


def display_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def is_connection_error(exc: BaseException) -> bool:
    """Redis cannot be reached (as opposed to a command Redis refused, e.g. out of memory)."""
    from redis.exceptions import BusyLoadingError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(
        exc, RedisConnectionError | RedisTimeoutError | BusyLoadingError | OSError | TimeoutError
    )


def refused_reply(exc: BaseException) -> str | None:
    """The reply (OOM, READONLY...) when Redis answered that it cannot serve now, else None."""
    text = str(exc)
    return text.split(" ", 1)[0] if text.startswith(UNAVAILABLE_REPLIES) else None


def reply_text(value: Any) -> str:
    """A value Redis sent back, as text (redis-py hands over bytes: responses are not decoded)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisUnavailableError(Exception):
    """Redis cannot serve a call now. Internal: each user of the backend turns it into its own
    outcome (a store's 503, a cache miss, this process's own rate-limit buckets)."""


class RedisUnreachableError(RedisUnavailableError):
    """Redis is down: known to be, or the call could not reach it."""


class RedisRefusedError(RedisUnavailableError):
    """Redis answered, but cannot take the command now (out of memory, a read-only replica,
    loading...); `reply` is the first word of its answer."""

    def __init__(self, message: str, *, reply: str) -> None:
        super().__init__(message)
        self.reply = reply


class RedisBackend:
    """An asyncio Redis client plus whether Redis answers.

    `available` is what request paths test: while Redis is known to be down they skip it at
    once instead of each waiting for a timeout. The state flips to down on the first
    connection failure any user reports, and back to up when the background ping (every
    `health_check_interval_s`) succeeds again."""

    def __init__(
        self,
        *,
        url: str,
        key_prefix: str = "mlserve:",
        socket_timeout_s: float = 1.0,
        connect_timeout_s: float = 1.0,
        health_check_interval_s: float = 1.0,
        max_connections: int = 64,
        client: Redis | None = None,
    ) -> None:
        require_redis()
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.key_prefix = key_prefix
        self.health_check_interval_s = health_check_interval_s
        if client is None:
            # Blocking pool: under a burst, callers wait (up to the socket timeout) for one of
            # max_connections instead of failing, which would read as "Redis is down". One
            # retry without backoff: after a Redis restart the first command on a pooled
            # connection fails and the retry reconnects; more would only lengthen an outage.
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=socket_timeout_s,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 1),
                retry_on_timeout=False,
                health_check_interval=0,
            )
            client = Redis.from_pool(pool)  # the client owns (and closes) the pool
        self.client: Redis = client
        self.up = False
        self.since = time.monotonic()
        self.last_error: str | None = None
        self._observers: list[StateObserver] = []
        self._monitor: asyncio.Task[None] | None = None
        self._checked_once = False
        self._closing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisBackend | None:
        """The backend for `redis.url`, or None when it is unset (ConfigError without redis)."""
        url = redis_url(settings)
        if url is None:
            return None
        return cls.from_config(url, settings.redis)

    @classmethod
    def from_config(cls, url: str, config: RedisSettings) -> RedisBackend:
        try:
            return cls(
                url=url,
                key_prefix=config.key_prefix,
                socket_timeout_s=config.socket_timeout_s,
                connect_timeout_s=config.connect_timeout_s,
                health_check_interval_s=config.health_check_interval_s,
                max_connections=config.max_connections,
            )
        except ValueError as exc:  # redis-py refuses the URL itself
            raise ConfigError(f"invalid setting 'redis.url': {exc}") from None

    # ------------------------------------------------------------------ keys
    def key(self, *parts: str | int) -> str:
        """A key under this deployment's prefix: key("job", id) -> "mlserve:job:<id>"."""
        return self.key_prefix + ":".join(str(p) for p in parts)

    # ------------------------------------------------------------------ state
    @property
    def available(self) -> bool:
        return self.up

    @property
    def status(self) -> str:
        return "up" if self.up else "down"

    def on_change(self, observer: StateObserver) -> None:
        """Call `observer(up)` on every change of state (metrics, fallbacks)."""
        self._observers.append(observer)

    def failed(self, exc: BaseException) -> None:
        """A user's call could not reach Redis: Redis is down until a ping succeeds."""
        self._set(False, f"{type(exc).__name__}: {exc}")

    def succeeded(self) -> None:
        self._set(True, None)

    def _set(self, up: bool, error: str | None) -> None:
        first = not self._checked_once
        self._checked_once = True
        if up == self.up and not first:
            return
        self.up = up
        self.since = time.monotonic()
        self.last_error = error
        where = display_url(self.url)
        if up:
            log.info("redis %s is %s", where, "reachable" if first else "reachable again")
        else:
            log.error(
                "redis %s is unreachable (%s): predictions go on; the cache is bypassed, "
                "rate limits and key revocations use local state, async jobs answer 503 "
                "until it is back",
                where,
                error,
            )
        for observer in self._observers:
            try:
                observer(up)
            except Exception:  # an observer's bug must not break the state change
                log.exception("redis state observer failed")

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`await fn(*args, **kwargs)`, a command (script, pipeline) to this Redis. Raises
        RedisUnreachableError at once while Redis is known to be down, and when the call
        cannot reach it (Redis is then down for every user until a ping succeeds);
        RedisRefusedError when Redis answered that it cannot serve now; other errors as raised."""
        if not self.available:
            raise RedisUnreachableError("redis is unreachable")
        try:
            return await fn(*args, **kwargs)
        except MlserveError:
            raise  # the caller's own error, from inside `fn`
        except Exception as exc:
            if is_connection_error(exc):
                self.failed(exc)
                raise RedisUnreachableError(str(exc)) from exc
            reply = refused_reply(exc)
            if reply is not None:
                raise RedisRefusedError(str(exc), reply=reply) from exc
            raise

    async def ping(self) -> bool:
        """One PING; updates the state. Never raises."""
        try:
            await self.client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable now"
            self.failed(exc)
            return False
        self.succeeded()
        return True

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Ping once (so the state is known before the first request), then keep pinging in
        the background. An unreachable Redis does not stop the server from starting."""
        await self.ping()
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(), name="redis-health"
            )

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.health_check_interval_s)  # a timer between pings
            if not self._closing:
                await self.ping()

    async def close(self) -> None:
        self._closing = True
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            # Bounded: a cancellation that lands while redis-py connects can be swallowed
            # (Python 3.11's wait_for); the loop then ends on its own after that ping.
            await asyncio.wait({monitor}, timeout=self.health_check_interval_s + 5.0)
            if monitor.done() and not monitor.cancelled():
                monitor.exception()  # retrieved: no "never retrieved" warning
        with contextlib.suppress(Exception):
            await self.client.aclose()


class RedisCaller:
    """Calls to Redis on behalf of one store whose requests fail while Redis cannot serve
    them: `await caller(fn, *args)` raises the store's own error (a 503) saying so.

    `subject` starts both messages, e.g. "async jobs are unavailable: their store (Redis)"."""

    def __init__(
        self,
        backend: RedisBackend,
        *,
        store: str,
        subject: str,
        error: Callable[[str], MlserveError],
    ) -> None:
        self.backend = backend
        self.store = store
        self.subject = subject
        self.error = error

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.backend.call(fn, *args, **kwargs)
        except RedisRefusedError as exc:
            log.warning("%s: redis refused a command: %s", self.store, exc)
            raise self.error(
                f"{self.subject} refused the request ({exc.reply}); retry later"
            ) from None
        except RedisUnreachableError:
            raise self.error(f"{self.subject} is unreachable; retry in a moment") from None


def export_state(backend: RedisBackend, registry: Any) -> None:
    """`mlserve_redis_up` (1 while Redis answers) on a server's metrics registry."""
    from prometheus_client import Gauge

    gauge = Gauge(
        "mlserve_redis_up",
        "1 while the shared Redis (redis.url) answers, 0 while it does not.",
        registry=registry,
        multiprocess_mode="livemin",
    )
    gauge.set(0)
    backend.on_change(lambda up: gauge.set(1 if up else 0))


def sync_client(url: str, config: RedisSettings) -> Any:
    """A blocking redis-py client, for commands (`mlserve keys revoke`) and the Celery worker's
    threads; same timeouts as the server's."""
    require_redis()
    from redis import Redis

    try:
        return Redis.from_url(
            url,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.connect_timeout_s,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid setting 'redis.url': {exc}") from None

"""Typed settings: the one place that reads the environment.

Defaults run locally with no servers (a SQLite file and the embedded in-memory queue). Setting
``AKHBAR_REDIS_URL`` and a PostgreSQL ``AKHBAR_DATABASE_URL`` switches to the distributed mode.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BATCH_SIZE = 200


class Settings(BaseSettings):
    """Every knob of akhbar; each field is read from ``AKHBAR_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="AKHBAR_", extra="ignore", secrets_dir=None)

    database_url: str = "sqlite:///./akhbar.db"
    # None means embedded mode: Celery's in-memory transport and an in-process worker.
    redis_url: SecretStr | None = None
    # Prefix for every Redis key akhbar writes itself (near-duplicate index, locks); lets several
    # deployments or test runs share one Redis database without colliding.
    redis_prefix: str = "akhbar"

    # Queues: live sources are consumed before bulk replays (see worker/app.py).
    queue_live: str = "akhbar.live"
    queue_bulk: str = "akhbar.bulk"

    # Input limits. A delivery above this size is rejected (and kept) rather than parsed.
    max_delivery_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2)

    # Micro-batching: a producer sends up to batch_size deliveries per message, or what it has
    # after batch_ms on a live source. Unset, it is 100 with a broker and EMBEDDED_BATCH_SIZE in
    # embedded mode (see below). With a broker, 20,000 corpus deliveries to two worker processes
    # ran at 286 and 289 stories/s in batches of 100 against 247 and 264 in batches of 50 (runs
    # interleaved): each batch's fixed costs (its task, transaction, execution records,
    # statements) are shared by twice the stories. Batches of 200 ran at 207 then, when a batch
    # that lost a key to the other process fell back to one delivery at a time (and deadlocked
    # with it); since it is written together again instead, 200 ran at 765 and 731 against 730
    # for 100 on one day, within the machine's noise, so 100 stays for its latency. A live
    # source's batches stay bounded by batch_ms, and so does its latency.
    batch_size: int = Field(default=100, ge=1, le=1000)
    batch_ms: int = Field(default=200, ge=0)
    # Embedded mode: compute each delivery's match form, enrichment and signature ahead in a second
    # process while the worker thread stores the ones before it (worker/precompute.py), on a machine
    # with more than one core.
    embedded_precompute: bool = True

    # Delivery contract (see worker/app.py for why each value is what it is).
    task_soft_time_limit: int = 240
    task_time_limit: int = 300
    # A message whose worker died is delivered again only after this many seconds, so it is how
    # long recovery from a crash takes; it must stay above everything a live worker may take with
    # a message unacknowledged: the hard time limit (300 s) and a retry's countdown (at most
    # retry_backoff_max, 60 s). Twice the hard time limit leaves room for a worker under load.
    visibility_timeout: int = 600
    # A delivery that crashed, hung or failed its worker this many times is quarantined.
    max_attempts: int = Field(default=3, ge=1)
    # Retries for transient errors (the database or broker away); with the backoff cap this rides
    # out an outage of about max_transient_retries * retry_backoff_max / 2 seconds.
    max_transient_retries: int = Field(default=20, ge=0)
    retry_backoff_max: int = 60
    # One story normally takes milliseconds; one still running after this many seconds is a hang.
    # Enforced per delivery (SIGALRM in the process that runs the task), below the task's limits.
    delivery_time_limit: float = Field(default=30.0, gt=0)
    # A delivery's first attempt, in a batch, waits less: max(this floor, first_attempt_time_factor x
    # the 99th percentile of the last 1,000 times a delivery's own work took in the process), at most
    # delivery_time_limit, so a hang holds its batch-mates that long rather than 30 s; past it,
    # the delivery is charged a timeout and its later attempts run alone with the full limit (see
    # worker/quarantine.py RecentTimes). 0 gives first attempts the full limit too.
    first_attempt_time_limit: float = Field(default=2.0, ge=0)
    first_attempt_time_factor: float = Field(default=20.0, gt=0)
    # Within that limit, a batch step's computation (normalizing, enriching: no I/O) that gets
    # under 5% of a core for this many seconds is blocked, not slow (a stuck call): it is charged a
    # timeout then, as past the limit (see worker/quarantine.py deadline). 0 turns this off.
    first_attempt_stall_limit: float = Field(default=0.2, ge=0)
    # How often a worker looks for messages whose consumer died (their visibility timeout passed).
    unacked_restore_interval: int = Field(default=10, ge=1)

    # Publish ledger: producers record every delivery in the database before publishing it, and
    # `akhbar reconcile` publishes again what was not committed after reconcile_grace seconds.
    publish_ledger: bool = True
    reconcile_grace: float = Field(default=120.0, ge=0)
    reconcile_batch: int = Field(default=2000, ge=1)
    # Retention, applied by `akhbar reconcile` every retention_interval seconds: settled ledger rows
    # (their deliveries are committed) are deleted this many days after settling, and the execution
    # records of committed deliveries this many days after they started; 0 keeps them forever.
    # Rows still needed (unsettled, or of a delivery not committed) are never deleted. Deletes go
    # retention_batch rows per transaction, so no lock is held for long.
    ledger_retention_days: float = Field(default=7.0, ge=0)
    execution_retention_days: float = Field(default=30.0, ge=0)
    retention_batch: int = Field(default=5000, ge=1)
    retention_interval: float = Field(default=3600.0, ge=0)

    # Fault injection for the fault-test tier only ("poison", "early_ack"): never set in production.
    failpoints: str = ""

    # Near-duplicate index window.
    neardup_window_days: int = 7

    # Push endpoint bearer tokens, "sender:token,sender:token" (or AKHBAR_PUSH_TOKENS_FILE in sources.toml).
    push_tokens: SecretStr | None = None

    log_level: str = "INFO"
    # "auto": console renderer on a TTY, JSON lines otherwise.
    log_format: str = "auto"

    @model_validator(mode="after")
    def _embedded_batches(self) -> Settings:
        # In embedded mode the producer and the worker share one process and one SQLite writer,
        # and a batch's fixed costs (its transaction, execution records, ledger commit) are paid
        # by the same thread that does the stories' work; there is no other worker to share a
        # message with, and no broker round trip to bound. Replaying the corpus took 10% less CPU
        # with batches of 200 than of 50 (34.9 and 33.5 s against 39.3, 39.7 and 36.4 s).
        if self.redis_url is None and "batch_size" not in self.model_fields_set:
            self.batch_size = EMBEDDED_BATCH_SIZE
        return self

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set: the queue runs in-process."""
        return self.redis_url is None

    @property
    def broker_url(self) -> str:
        return "memory://localhost/" if self.redis_url is None else self.redis_url.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[-1]
        return None if path in ("", ":memory:") else Path(path)


SECRETS_DIR = Path("/run/secrets")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (and Docker secret files named
    like the variables, e.g. /run/secrets/akhbar_push_tokens, when that directory exists)."""
    if SECRETS_DIR.is_dir():
        return Settings(_secrets_dir=SECRETS_DIR)  # type: ignore[call-arg]
    return Settings()

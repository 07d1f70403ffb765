"""Configuration from the environment (prefix `GRADER_`), one object for every deployable."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADER_", extra="ignore")

    data_dir: Path = Field(
        PROJECT_ROOT / "var",
        description="Where expected facts, stand-in checkpoints and the embedded database live.",
    )
    sandbox_backend: Literal["auto", "docker", "process"] = Field(
        "auto", description="`auto`: Docker when an engine answers, else the process backend."
    )
    docker_image: str = Field(
        "ml-grader-sandbox:local", description="Sandbox image the Docker backend runs."
    )
    gpu: Literal["auto", "on", "off"] = Field(
        "auto", description="Offer a GPU to tasks that ask for one."
    )
    max_code_bytes: int = Field(64 * 1024, description="Largest answer accepted, in bytes.")
    # What a posted spec's `limits` may ask: a sandbox the engine refuses never grades.
    max_task_cpus: float = Field(
        float(os.cpu_count() or 4),
        gt=0,
        description="Most CPU cores a task's sandbox may ask for (default: this machine's cores).",
    )
    max_task_memory_bytes: int = Field(
        8 * GIB, gt=0, description="Most memory a task's sandbox may ask for, in bytes."
    )
    max_task_time_limit_s: float = Field(
        120.0, gt=0, description="Longest time limit a task may set for one run, in seconds."
    )
    max_task_output_bytes: int = Field(
        1024 * 1024, gt=0, description="Most stdout and stderr, each, a task may keep, in bytes."
    )
    validation_parallelism: int = Field(
        2, ge=1, le=64, description="Sandbox runs at once in a self-test."
    )
    warm_pool_size: int = Field(
        1,
        ge=0,
        le=64,
        description="Warm sandboxes a grading worker process keeps per set of limits; 0: none.",
    )
    warm_max_idle_s: float = Field(
        600.0,
        gt=0,
        description="A warm sandbox is replaced this long after it started, used or not.",
    )
    fork_server_jobs: int = Field(
        100,
        ge=1,
        le=10000,
        description=(
            "The fast path: jobs one warm Docker sandbox runs, each in a fresh child under a uid "
            "of its own, before it is replaced; 1 turns it off (one sandbox per job)."
        ),
    )
    fork_server_zygotes: int = Field(
        6,
        ge=0,
        le=32,
        description=(
            "Setups of the shipped task bank a fork server keeps run, to fork their jobs from "
            "(each costs the sandbox up to 256 MiB more memory); 0: every job runs its setup."
        ),
    )
    tasks_dir: Path = Field(PROJECT_ROOT / "taskbank" / "tasks", description="Bundled task specs.")

    database_url: str = Field(
        "", description="SQLAlchemy URL; empty: a SQLite file in the data dir."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Celery broker and result backend."
    )
    api_host: str = Field("127.0.0.1", description="Where `gradectl serve` listens.")
    api_port: int = Field(8000, description="Port of the API.")
    bootstrap_admin_key: str = Field(
        "",
        description="If set, an admin API key with this value is created at start-up (first run).",
    )
    max_request_bytes: int = Field(256 * 1024, description="Largest request body the API reads.")
    max_discarded_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=0,
        description="Of a body over the limit, the most read and thrown away before the 413, so "
        "the client, done sending, reads it; above this the connection is closed at once.",
    )
    request_body_timeout_s: float = Field(
        30.0, gt=0, description="A request body still arriving this long after it began gets 408."
    )
    max_queue_length: int = Field(
        5000, description="Queued submissions above which the API answers 503."
    )
    long_poll_max_s: float = Field(
        30.0, description="Longest `wait_s` a GET on a submission may ask for."
    )
    webhook_allowed_networks: str = Field(
        "",
        description="Comma-separated CIDRs a callback may resolve into besides public addresses "
        "(e.g. 127.0.0.0/8 for local tests). Private and loopback targets are refused otherwise.",
    )
    webhook_timeout_s: float = Field(10.0, description="Timeout of one webhook delivery.")
    webhook_max_attempts: int = Field(
        6, description="Deliveries tried before a webhook is marked failed."
    )
    webhook_backoff_s: float = Field(2.0, description="First retry delay; doubles each attempt.")
    grading_max_retries: int = Field(
        3, description="Retries of a submission after an internal error."
    )
    reaper_interval_s: float = Field(
        30.0, description="How often stuck submissions are re-enqueued."
    )
    stuck_grace_s: float = Field(
        120.0, description="Time past its deadline before a submission is stuck."
    )
    load_task_bank: bool = Field(True, description="Load the bundled task bank at start-up.")
    public_url: str = Field(
        "",
        description="The address learners reach the service at, for the links it makes (e.g. "
        "https://grader.example.org); empty: the address the request for a link came to "
        "(`gradectl link`: http://API_HOST:API_PORT).",
    )
    link_ttl_s: int = Field(
        24 * 3600, ge=60, description="How long a learner's link is valid when not told otherwise."
    )
    max_link_ttl_s: int = Field(
        30 * 24 * 3600, ge=60, description="The longest `expires_in_s` a link may ask for."
    )
    session_ttl_s: int = Field(
        8 * 3600, ge=60, description="How long a learner's session in the pages lasts."
    )
    frame_ancestors: str = Field(
        "'none'",
        description="The pages' Content-Security-Policy `frame-ancestors`: who may embed them "
        "(e.g. `https://lms.example.org` for an LMS; `'none'`: nobody).",
    )

    lti_leeway_s: int = Field(
        60, ge=0, le=600, description="LTI: the clock skew allowed on a launch's exp and iat."
    )
    lti_key_grace_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="LTI: how long a rotated-out tool key is still published at /lti/jwks.",
    )
    lti_key_set_ttl_s: int = Field(
        3600,
        ge=0,
        description="LTI: how long a platform's key set is cached (an unknown kid refetches it).",
    )
    lti_grade_policy: Literal["best", "latest"] = Field(
        "best", description="LTI: what a new link's line item shows, the best or the latest score."
    )
    lti_passback_max_attempts: int = Field(
        6, ge=1, description="LTI: tries of a score's passback before it is marked failed."
    )
    lti_passback_backoff_s: float = Field(
        2.0, gt=0, description="LTI: the first passback retry's delay; doubles each try."
    )

    @property
    def torch_home(self) -> Path:
        return self.data_dir / "torch_home"

    @property
    def expected_dir(self) -> Path:
        return self.data_dir / "expected"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'grader.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

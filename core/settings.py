"""Configuration from the environment (prefix `GRADER_`), one object for every deployable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
    docker_runtime_dir: Path = Field(
        PROJECT_ROOT / "var" / "runtime",
        description="Host runtime bundle mounted read-only by the locally built (registry-free) image.",
    )
    gpu: Literal["auto", "on", "off"] = Field(
        "auto", description="Offer a GPU to tasks that ask for one."
    )
    max_code_bytes: int = Field(64 * 1024, description="Largest answer accepted, in bytes.")
    validation_parallelism: int = Field(2, ge=1, le=64, description="Sandbox runs at once in a self-test.")
    tasks_dir: Path = Field(PROJECT_ROOT / "taskbank" / "tasks", description="Bundled task specs.")

    @property
    def torch_home(self) -> Path:
        return self.data_dir / "torch_home"

    @property
    def expected_dir(self) -> Path:
        return self.data_dir / "expected"


@lru_cache
def get_settings() -> Settings:
    return Settings()

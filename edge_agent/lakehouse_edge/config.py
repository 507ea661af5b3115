"""The agent's TOML configuration; the token is read from a file of mode 0600."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pis
    import tomli as tomllib


class ConfigError(Exception):
    """The configuration or the token file cannot be used."""


@dataclass
class AgentConfig:
    gateway: str
    token_file: str
    state_dir: str
    interval_seconds: float = 10.0
    batch_size: int = 100
    max_queue: int = 1_000_000
    queue_policy: str = "drop_oldest"
    gzip: bool = True
    max_readings: int = 0  # stop sampling after this many (0: never); for tests and demos
    sources: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str) -> "AgentConfig":
        try:
            with open(path, "rb") as handle:
                raw = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        try:
            config = cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if config.queue_policy not in ("drop_oldest", "pause"):
            raise ConfigError("queue_policy must be drop_oldest or pause")
        return config

    def token(self) -> str:
        try:
            mode = os.stat(self.token_file).st_mode
        except OSError as exc:
            raise ConfigError(f"cannot read the token file: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{self.token_file} must be readable by its owner only (chmod 600)")
        with open(self.token_file) as handle:
            token = handle.read().strip()
        if not token:
            raise ConfigError(f"{self.token_file} is empty")
        return token

"""dreamzero's agent: config and presets, environments, replay, reanalysis, training,
evaluation, checkpoints, reports and the `dreamzero` command."""

from agent.config import Config, ConfigError, preset, validate

__all__ = ["Config", "ConfigError", "preset", "validate"]

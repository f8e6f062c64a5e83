"""The config: typed models loaded from YAML, the ops interface of the service.

`syntax` is what a route may say, `models` the sections of the file, `load` reading and
checking a file with every error located by its YAML line.
"""

from router.config.load import load_config, parse_config, remember_secrets
from router.config.models import (
    AnalyticsConfig,
    BatchConfig,
    ClassConfig,
    Config,
    FieldMatch,
    FleetConfig,
    HttpConfig,
    LaneConfig,
    MediaConfig,
    MediaUploadConfig,
    MqttConfig,
    NotifyConfig,
    RedisConfig,
    RetryConfig,
    RouteConfig,
    ServiceConfig,
    ShedConfig,
    SlaConfig,
    TokenConfig,
    YamlPath,
)

__all__ = [
    "AnalyticsConfig", "BatchConfig", "ClassConfig", "Config", "FieldMatch", "FleetConfig",
    "HttpConfig", "LaneConfig", "MediaConfig", "MediaUploadConfig", "MqttConfig", "NotifyConfig",
    "RedisConfig", "RetryConfig", "RouteConfig", "ServiceConfig", "ShedConfig", "SlaConfig",
    "TokenConfig", "YamlPath", "load_config", "parse_config", "remember_secrets",
]  # fmt: skip

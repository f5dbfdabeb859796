"""Configuration: every variable checked before any work, every problem named by its variable."""

from __future__ import annotations

import pytest

from handler.aws.settings import DEFAULT_ENDPOINT, ConfigurationError, settings_from

MINIMAL = {"ZEGO_APP_ID": "1234567890", "ZEGO_SECRET_ID": "kickout/zego", "KICKOUT_STATE_TABLE": "kickout-state"}


def test_minimal_configuration_uses_the_unified_endpoint() -> None:
    config = settings_from(MINIMAL)
    assert config.app_id == 1234567890
    assert config.secret_id == "kickout/zego"
    assert config.endpoint == DEFAULT_ENDPOINT
    assert config.dlq_url is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ZEGO_SECRET_ID": "s"}, "ZEGO_APP_ID: is not set"),
        ({"ZEGO_APP_ID": "1"}, "ZEGO_SECRET_ID: is not set"),
        ({"ZEGO_APP_ID": "1", "ZEGO_SECRET_ID": "s"}, "KICKOUT_STATE_TABLE: is not set"),
        ({**MINIMAL, "ZEGO_RATE_LIMIT_PER_SECOND": "0"}, "ZEGO_RATE_LIMIT_PER_SECOND"),
        ({**MINIMAL, "KICKOUT_QUEUE_MAXIMUM_CONCURRENCY": "0"}, "KICKOUT_QUEUE_MAXIMUM_CONCURRENCY"),
        ({**MINIMAL, "KICKOUT_RESERVED_CONCURRENCY": "-1"}, "KICKOUT_RESERVED_CONCURRENCY"),
        ({**MINIMAL, "KICKOUT_API_RATE_LIMIT": "0"}, "KICKOUT_API_RATE_LIMIT"),
        ({**MINIMAL, "KICKOUT_API_BURST_LIMIT": "many"}, "KICKOUT_API_BURST_LIMIT"),
        ({**MINIMAL, "ZEGO_APP_ID": "abc"}, "ZEGO_APP_ID"),
        ({**MINIMAL, "ZEGO_APP_ID": "0"}, "ZEGO_APP_ID"),
        ({**MINIMAL, "ZEGO_APP_ID": str(2**32)}, "ZEGO_APP_ID"),
        ({**MINIMAL, "ZEGO_API_ENDPOINT": "http://zim-api.zego.im/"}, "ZEGO_API_ENDPOINT: must use https"),
        ({**MINIMAL, "ZEGO_API_ENDPOINT": "ftp://zim-api.zego.im/"}, "ZEGO_API_ENDPOINT: must use https"),
        ({**MINIMAL, "ZEGO_API_ENDPOINT": "zim-api.zego.im"}, "ZEGO_API_ENDPOINT: must be an absolute URL"),
        ({**MINIMAL, "ZEGO_API_ENDPOINT": "https://zim-api.zego.im/?Action=x"}, "ZEGO_API_ENDPOINT: must not carry"),
    ],
)
def test_a_missing_or_malformed_variable_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("?", r"\?")):
        settings_from(environ)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080/", "http://localhost:1/", "http://[::1]:9/"])
def test_plain_http_is_allowed_for_loopback_test_servers_only(endpoint: str) -> None:
    assert settings_from({**MINIMAL, "ZEGO_API_ENDPOINT": endpoint}).endpoint == endpoint


@pytest.mark.parametrize("endpoint", ["http://10.0.0.1/", "http://127.example.com/", "http://localhost.evil.com/"])
def test_plain_http_elsewhere_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="ZEGO_API_ENDPOINT"):
        settings_from({**MINIMAL, "ZEGO_API_ENDPOINT": endpoint})


def test_empty_variables_count_as_unset() -> None:
    with pytest.raises(ConfigurationError, match="ZEGO_APP_ID: is not set"):
        settings_from({**MINIMAL, "ZEGO_APP_ID": ""})


@pytest.mark.parametrize(
    ("environ", "environments"),
    [
        ({}, 2 + 2 + 56),  # the template's defaults: the queue's 2, the stage's burst of 2, then 2/s for 28 s
        ({"KICKOUT_QUEUE_MAXIMUM_CONCURRENCY": "5", "KICKOUT_API_RATE_LIMIT": "0.5"}, 5 + 2 + 14),
        ({"KICKOUT_RESERVED_CONCURRENCY": "12"}, 12),  # reserved concurrency caps the whole function
    ],
)
def test_the_most_environments_at_once_follow_from_what_the_template_limits(
    environ: dict[str, str], environments: int
) -> None:
    assert settings_from({**MINIMAL, **environ}).max_environments == environments

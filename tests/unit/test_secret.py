"""The ServerSecret: both storage shapes, the cache, a forced re-read, and errors that never carry it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest

from handler.kickout import SecretUnavailable
from handler.secret import read_server_secret, server_secret_from
from kickout_dev.sandbox import REGION, SERVER_SECRET, Sandbox, sandbox


@pytest.mark.parametrize(
    "stored",
    [
        SERVER_SECRET,
        f"  {SERVER_SECRET}\n",
        json.dumps({"ServerSecret": SERVER_SECRET}),
        json.dumps({"ServerSecret": SERVER_SECRET, "AppId": 1}),
    ],
)
def test_both_storage_shapes_give_the_server_secret(stored: str) -> None:
    assert server_secret_from(stored) == SERVER_SECRET


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ('{"ServerSecret": ', "does not parse"),
        ('{"serverSecret": "x"}', '"ServerSecret"'),
        ('{"ServerSecret": 42}', '"ServerSecret"'),
        ('{"ServerSecret": ""}', "empty"),
    ],
)
def test_an_unusable_secret_is_refused_clearly(stored: str, problem: str) -> None:
    with pytest.raises(SecretUnavailable, match=problem):
        server_secret_from(stored)


@pytest.fixture
def stored_secret() -> Iterator[Sandbox]:
    with sandbox() as box:
        yield box


def test_the_secret_is_cached_until_a_forced_read(stored_secret: Sandbox) -> None:
    assert read_server_secret(stored_secret.secret_arn) == SERVER_SECRET
    stored_secret.put_secret(json.dumps({"ServerSecret": "rotated"}))
    assert read_server_secret(stored_secret.secret_arn) == SERVER_SECRET
    assert read_server_secret(stored_secret.secret_arn, force_fetch=True) == "rotated"
    assert read_server_secret(stored_secret.secret_arn) == "rotated"


def test_a_missing_secret_names_the_cause_not_the_value(stored_secret: Sandbox) -> None:
    read_server_secret(stored_secret.secret_arn)
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=stored_secret.secret_arn, ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(SecretUnavailable) as unavailable:
        read_server_secret(stored_secret.secret_arn, force_fetch=True)
    assert "ResourceNotFoundException" in str(unavailable.value)
    assert SERVER_SECRET not in str(unavailable.value)

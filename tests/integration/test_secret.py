"""The ServerSecret: both storage shapes, the cache, a forced re-read, and errors that never carry it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from handler.aws.secret import server_secret_from
from handler.core.errors import SecretUnavailable
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


def read_secret(box: Sandbox, force_fetch: bool = False) -> str:
    """The ServerSecret as the sandbox's function reads it (its secret, its cache)."""
    return box.function.server_secret().read(force_fetch)


@pytest.fixture
def stored_secret() -> Iterator[Sandbox]:
    with sandbox() as box:
        yield box


def test_the_secret_is_cached_until_a_forced_read(stored_secret: Sandbox) -> None:
    assert read_secret(stored_secret) == SERVER_SECRET
    stored_secret.put_secret(json.dumps({"ServerSecret": "rotated"}))
    assert read_secret(stored_secret) == SERVER_SECRET
    assert read_secret(stored_secret, force_fetch=True) == "rotated"
    assert read_secret(stored_secret) == "rotated"


def test_a_missing_secret_names_the_cause_not_the_value(stored_secret: Sandbox) -> None:
    read_secret(stored_secret)
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=stored_secret.secret_arn, ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(SecretUnavailable) as unavailable:
        read_secret(stored_secret, force_fetch=True)
    assert "ResourceNotFoundException" in str(unavailable.value)
    assert SERVER_SECRET not in str(unavailable.value)


def test_forced_reads_close_together_share_one_fetch(stored_secret: Sandbox) -> None:
    # GIVEN the calls of a batch all refused for a rotated secret, each asking for a forced read
    stored_secret.put_secret("rotated-once")
    assert read_secret(stored_secret, force_fetch=True) == "rotated-once"
    stored_secret.put_secret("rotated-twice")
    # THEN the next forced read within the sharing window uses what the first one fetched
    assert read_secret(stored_secret, force_fetch=True) == "rotated-once"


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names Secrets Manager is really asked for: a spy on the provider's fetch, which still reaches moto."""
    asked: list[str] = []
    real_get = SecretsProvider._get

    def counting_get(self: SecretsProvider, name: str, **options: Any) -> Any:
        asked.append(name)
        return real_get(self, name, **options)

    monkeypatch.setattr(SecretsProvider, "_get", counting_get)
    return asked


def test_concurrent_first_reads_fetch_once(stored_secret: Sandbox, fetches: list[str]) -> None:
    # WHEN ten calls of a batch read the secret at once, on a cold cache
    with ThreadPoolExecutor(max_workers=10) as workers:
        secrets = list(workers.map(lambda _: read_secret(stored_secret), range(10)))
    # THEN all get it, and Secrets Manager was asked once
    assert secrets == [SERVER_SECRET] * 10
    assert fetches == [stored_secret.secret_arn]


def test_concurrent_reads_of_a_missing_secret_share_one_failed_fetch(
    stored_secret: Sandbox, fetches: list[str]
) -> None:
    # GIVEN the secret is gone
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=stored_secret.secret_arn, ForceDeleteWithoutRecovery=True
    )

    def read(_: int) -> str:
        try:
            return read_secret(stored_secret)
        except SecretUnavailable as unavailable:
            return str(unavailable)

    # WHEN ten calls of a batch need it at once
    with ThreadPoolExecutor(max_workers=10) as workers:
        answers = list(workers.map(read, range(10)))
    # THEN each is told why, and Secrets Manager was asked once (a slow one is waited out once, not ten times)
    assert all("ResourceNotFoundException" in answer for answer in answers)
    assert fetches == [stored_secret.secret_arn]


def test_the_secrets_client_is_bounded_and_shares_the_other_clients_session(box: Sandbox) -> None:
    from handler.aws import clients

    # GIVEN the provider and a DynamoDB client, as the wiring makes them
    provider: Any = clients.secrets_provider()
    dynamodb = clients.dynamodb()
    config = provider.client.meta.config
    # THEN the secret's calls are held to their bounds (not botocore's 60 s defaults)
    assert (config.connect_timeout, config.read_timeout) == (
        clients.SECRETS_MANAGER.connect,
        clients.SECRETS_MANAGER.read,
    )
    assert config.retries == {"mode": "standard", "total_max_attempts": clients.SECRETS_MANAGER.attempts}
    # AND both clients come from one botocore session: its endpoint data loaded once, not once per client
    assert provider.client._loader is getattr(dynamodb, "_loader")  # noqa: B009 (botocore's, not typed)

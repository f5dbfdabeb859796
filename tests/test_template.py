"""template.yaml as a specification: what the stack must guarantee the code.

cfn-lint checks the template against the CloudFormation and SAM schemas; the
tests below pin the choices those schemas cannot know about (IAM scope, SQS
timings, ZEGO hosts).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml

from handler.fleet.budget import MARGIN

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
SAMCONFIG_PATH = ROOT / "samconfig.toml"
HANDLER_SOURCE = ROOT / "src" / "handler"
LINT_REGIONS = ["eu-central-1", "us-east-1"]
# cfn-lint-serverless, as `make template-lint` appends it.
SERVERLESS_RULES = ["cfn_lint_serverless.rules"]

Template = dict[str, Any]


def lint(path: Path) -> list[Any]:
    """Every cfn-lint error and warning for the template at path."""
    config = ManualArgs(regions=LINT_REGIONS, append_rules=SERVERLESS_RULES)
    matches: list[Any] = lint_file(path, config=config)
    return matches


def resource(template: Template, logical_id: str, resource_type: str) -> dict[str, Any]:
    """Properties of one resource, after checking its type."""
    found: dict[str, Any] = template["Resources"][logical_id]
    assert found["Type"] == resource_type
    properties: dict[str, Any] = found.get("Properties", {})
    return properties


def function_setting(template: Template, name: str) -> Any:
    """A function property, taken from the function or else from Globals."""
    function = resource(template, "KickoutFunction", "AWS::Serverless::Function")
    if name in function:
        return function[name]
    return template["Globals"]["Function"][name]


def environment(template: Template) -> dict[str, Any]:
    """The function's variables merged over Globals, as SAM merges them."""
    global_vars: dict[str, Any] = template["Globals"]["Function"]["Environment"]["Variables"]
    function = resource(template, "KickoutFunction", "AWS::Serverless::Function")
    return {**global_vars, **function["Environment"]["Variables"]}


def policy_statements(template: Template, function_id: str = "KickoutFunction") -> list[dict[str, Any]]:
    """Inline statements of every function policy (policy templates excluded)."""
    function = resource(template, function_id, "AWS::Serverless::Function")
    statements: list[dict[str, Any]] = []
    for policy in function["Policies"]:
        if isinstance(policy, dict) and "Statement" in policy:
            # a conditional statement counts as granted: the tests must hold when its condition does
            statements.extend(statement.get("Fn::If", [None, statement])[1] for statement in policy["Statement"])
    return statements


def as_list(value: object) -> list[object]:
    """IAM allows a single action or resource in place of a list."""
    return list(value) if isinstance(value, list) else [value]


def get_att(logical_id: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


# The ServiceName parameter, or else the stack's name (a parameter's default cannot be a Ref).
SERVICE_NAME = {"Fn::If": ["ServiceNameGiven", {"Ref": "ServiceName"}, {"Ref": "AWS::StackName"}]}


def evaluate(template: Template, value: Any, parameters: dict[str, str], stack_name: str) -> Any:
    """A value as CloudFormation resolves it, for the intrinsics conditions and names use here."""
    if not isinstance(value, dict) or len(value) != 1:
        return value
    [(function, argument)] = value.items()
    match function:
        case "Ref" if argument == "AWS::StackName":
            return stack_name
        case "Ref":
            return parameters.get(argument, template["Parameters"][argument].get("Default"))
        case "Fn::Equals":
            left, right = (evaluate(template, side, parameters, stack_name) for side in argument)
            return left == right
        case "Fn::Not":
            return not evaluate(template, argument[0], parameters, stack_name)
        case "Fn::If":
            condition, if_true, if_false = argument
            chosen = (
                if_true if evaluate(template, template["Conditions"][condition], parameters, stack_name) else if_false
            )
            return evaluate(template, chosen, parameters, stack_name)
    raise AssertionError(f"cannot evaluate {function}")


@pytest.fixture(scope="module")
def template() -> Template:
    # cfn-lint's loader understands the short intrinsic tags (!Ref, !GetAtt, !Sub).
    loaded: Template = cfn_yaml.load(str(TEMPLATE_PATH))
    return loaded


# --- lint ------------------------------------------------------------------


def test_template_passes_cfn_lint_without_errors_or_warnings() -> None:
    # GIVEN the template as committed
    # WHEN cfn-lint checks it in the regions we deploy to
    matches = lint(TEMPLATE_PATH)
    # THEN it reports nothing
    assert [str(match) for match in matches] == []


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        pytest.param("Runtime: python3.13", "Runtime: python2.7", id="retired-runtime"),
        pytest.param("Tracing: Active", "Tracing: Sometimes", id="unknown-tracing-mode"),
        pytest.param("VisibilityTimeout: 370", "VisibilityTimeout: 86400", id="visibility-over-12h"),
        pytest.param("SqsManagedSseEnabled: true", "SqsManagedSse: true", id="unknown-property"),
    ],
)
def test_lint_flags_a_broken_copy_of_the_template_on_the_broken_line(tmp_path: Path, good: str, bad: str) -> None:
    # GIVEN a copy of the template with one line broken
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert good in text
    broken_text = text.replace(good, bad, 1)
    broken_line = text[: text.index(good)].count("\n") + 1
    broken = tmp_path / "template.yaml"
    broken.write_text(broken_text, encoding="utf-8")
    # WHEN cfn-lint checks the copy
    matches = lint(broken)
    # THEN it reports the broken line
    assert matches, "cfn-lint accepted a broken template"
    assert broken_line in {match.linenumber for match in matches}, [str(m) for m in matches]


SAM_CLI = ROOT / ".venv-sam" / "bin" / "sam"
SAM = ROOT / "scripts" / "sam"
"""The SAM CLI as make runs it: no telemetry, its settings in .venv-sam, not the home directory."""


@pytest.mark.skipif(not SAM_CLI.exists() and not os.environ.get("CI"), reason="the SAM CLI is not installed (make sam)")
@pytest.mark.parametrize(
    ("good", "bad", "verdict"),
    [
        pytest.param("Runtime: python3.13", "Runtime: python3.13", "is a valid SAM Template", id="the-template"),
        pytest.param("Runtime: python3.13", "Runtime: python2.7", "E2533", id="retired-runtime"),
    ],
)
def test_the_ci_lint_step_sam_validate_lint_tells_good_from_bad(
    tmp_path: Path, good: str, bad: str, verdict: str
) -> None:
    # GIVEN the template, or a copy with one line broken
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE_PATH.read_text(encoding="utf-8").replace(good, bad, 1), encoding="utf-8")
    # WHEN `make template-lint`'s command checks it
    checked = subprocess.run(
        [str(SAM), "validate", "--lint", "--template-file", str(broken), "--region", "eu-central-1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    # THEN it passes the template and fails the broken copy, naming the rule
    assert verdict in checked.stdout + checked.stderr
    assert (checked.returncode == 0) == (good == bad)


# --- function --------------------------------------------------------------


def test_function_runs_python_3_13_on_arm64_with_active_tracing(template: Template) -> None:
    assert function_setting(template, "Runtime") == "python3.13"
    # arm64 unless a local run (make sam-local) overrides the parameter with this machine's architecture
    assert function_setting(template, "Architectures") == [{"Ref": "FunctionArchitecture"}]
    architecture = template["Parameters"]["FunctionArchitecture"]
    assert (architecture["Default"], sorted(architecture["AllowedValues"])) == ("arm64", ["arm64", "x86_64"])
    assert function_setting(template, "Tracing") == "Active"


def test_aws_endpoint_is_declared_empty_so_sam_local_can_point_it_at_a_stand_in(
    template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the function's AWS_ENDPOINT_URL as the template declares it (sam local --env-vars overrides only
    # declared variables)
    declared = environment(template)["AWS_ENDPOINT_URL"]
    assert declared == ""
    # WHEN boto3 builds a client in an environment holding that value, as Lambda would set it
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", declared)
    client = boto3.client("sqs", region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="y")
    # THEN botocore ignores the empty value (ConfiguredEndpointProvider takes only a non-empty one): AWS's own
    assert client.meta.endpoint_url == "https://sqs.eu-central-1.amazonaws.com"


def test_function_entry_point_is_the_handler_package(template: Template) -> None:
    function = resource(template, "KickoutFunction", "AWS::Serverless::Function")
    assert function["Handler"] == "handler.app.lambda_handler"
    assert function["CodeUri"] == "src/"
    assert (ROOT / "src" / "requirements.txt").is_file()


def test_powertools_is_configured_by_the_template_not_the_code(template: Template) -> None:
    variables = environment(template)
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Kickout"
    assert variables["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert "LOG_LEVEL" not in variables
    assert template["Parameters"]["LogLevel"]["Default"] == "INFO"
    assert template["Parameters"]["LogLevel"]["AllowedValues"] == ["DEBUG", "INFO", "WARNING", "ERROR"]


def test_function_is_told_zego_settings_and_the_dead_letter_queue_url(template: Template) -> None:
    variables = environment(template)
    assert variables["ZEGO_APP_ID"] == {"Ref": "ZegoAppId"}
    assert variables["ZEGO_SECRET_ID"] == {"Ref": "ZegoSecretArn"}
    assert variables["ZEGO_API_ENDPOINT"] == {"Ref": "ZegoApiEndpoint"}
    # Ref of an SQS queue is its URL.
    assert variables["KICKOUT_DLQ_URL"] == {"Ref": "KickoutDeadLetterQueue"}


def test_app_id_parameter_accepts_only_uint32(template: Template) -> None:
    app_id = template["Parameters"]["ZegoAppId"]
    assert app_id["Type"] == "Number"
    assert int(app_id["MinValue"]) >= 0
    assert int(app_id["MaxValue"]) == 2**32 - 1


def test_api_endpoint_is_limited_to_zego_zim_hosts(template: Template) -> None:
    endpoint = template["Parameters"]["ZegoApiEndpoint"]
    allowed = endpoint["AllowedValues"]
    assert endpoint["Default"] == "https://zim-api.zego.im/"
    assert set(allowed) == {
        "https://zim-api.zego.im/",
        *(f"https://zim-api-{region}.zego.im/" for region in ("sha", "hkg", "fra", "lax", "bom", "sgp")),
    }


def test_secret_policy_covers_only_the_secret_parameter(template: Template) -> None:
    function = resource(template, "KickoutFunction", "AWS::Serverless::Function")
    secret_policies = [
        policy["AWSSecretsManagerGetSecretValuePolicy"]
        for policy in function["Policies"]
        if isinstance(policy, dict) and "AWSSecretsManagerGetSecretValuePolicy" in policy
    ]
    assert secret_policies == [{"SecretArn": {"Ref": "ZegoSecretArn"}}]
    for statement in policy_statements(template):
        assert not any(str(action).startswith("secretsmanager:") for action in as_list(statement["Action"]))


def test_kms_decrypt_only_for_the_given_key_and_only_through_secrets_manager(template: Template) -> None:
    decrypts = [statement for statement in policy_statements(template) if "kms:Decrypt" in as_list(statement["Action"])]
    assert len(decrypts) == 1
    assert decrypts[0]["Resource"] == {"Ref": "ZegoSecretKmsKeyArn"}
    assert decrypts[0]["Condition"]["StringEquals"]["kms:ViaService"] == {
        "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"
    }
    assert template["Parameters"]["ZegoSecretKmsKeyArn"]["Default"] == ""
    assert template["Conditions"]["DecryptWithSecretKmsKey"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ZegoSecretKmsKeyArn"}, ""]}]
    }


def test_send_message_is_allowed_only_on_the_two_queues(template: Template) -> None:
    # The function parks in the DLQ and sends again to the kickout queue what a batch had no time for.
    sends = [
        statement
        for statement in policy_statements(template)
        if any(action in {"sqs:SendMessage", "sqs:*", "*"} for action in as_list(statement["Action"]))
    ]
    assert all(statement["Effect"] == "Allow" for statement in sends)
    assert all(as_list(statement["Action"]) == ["sqs:SendMessage"] for statement in sends)
    resources = [resource for statement in sends for resource in as_list(statement["Resource"])]
    assert sorted(map(str, resources)) == sorted(
        map(str, [get_att("KickoutDeadLetterQueue", "Arn"), get_att("KickoutQueue", "Arn")])
    )


def test_log_group_is_the_functions_and_keeps_logs_for_the_retention_parameter(template: Template) -> None:
    log_group = resource(template, "KickoutFunctionLogGroup", "AWS::Logs::LogGroup")
    assert log_group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${KickoutFunction}"}
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30


# --- REST API --------------------------------------------------------------


def test_api_accepts_only_iam_signed_post_kickouts_on_stage_v1(template: Template) -> None:
    api = resource(template, "KickoutApi", "AWS::Serverless::Api")
    assert api["StageName"] == "v1"
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    event = function_setting(template, "Events")["Api"]
    assert event["Type"] == "Api"
    assert event["Properties"] == {"RestApiId": {"Ref": "KickoutApi"}, "Path": "/kickouts", "Method": "post"}


def test_the_callback_route_is_the_one_without_iam_auth_and_served_by_its_own_function(template: Template) -> None:
    # ZEGO cannot sign SigV4: POST /zego/callbacks has no authorizer, and is served by a function of its own
    callbacks = resource(template, "KickoutCallbackFunction", "AWS::Serverless::Function")
    assert callbacks["Handler"] == "handler.app.callbacks_lambda_handler"
    assert callbacks["Events"] == {
        "Callbacks": {
            "Type": "Api",
            "Properties": {
                "RestApiId": {"Ref": "KickoutApi"},
                "Path": "/zego/callbacks",
                "Method": "post",
                "Auth": {"Authorizer": "NONE"},
            },
        }
    }
    # and it answers before ZEGO gives up on it (a few seconds)
    assert callbacks["Timeout"] <= 6
    # and no other route of the API goes without IAM
    for logical_id, found in template["Resources"].items():
        if found["Type"] == "AWS::Serverless::Function" and logical_id != "KickoutCallbackFunction":
            for event in found["Properties"].get("Events", {}).values():
                assert "Auth" not in event["Properties"], logical_id


def test_the_callback_functions_role_reads_keep_outs_claims_callbacks_and_sends_to_the_queue_only(
    template: Template,
) -> None:
    callbacks = resource(template, "KickoutCallbackFunction", "AWS::Serverless::Function")
    secret_policies = [policy for policy in callbacks["Policies"] if "AWSSecretsManagerGetSecretValuePolicy" in policy]
    assert secret_policies == [{"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "ZegoSecretArn"}}}]
    granted = {
        (tuple(as_list(statement["Action"])), str(statement["Resource"]), str(statement.get("Condition")))
        for statement in policy_statements(template, "KickoutCallbackFunction")
    }
    table = str(get_att("KickoutStateTable", "Arn"))
    assert granted == {
        (
            ("dynamodb:GetItem", "dynamodb:BatchGetItem"),
            table,
            str({"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["keepout#*"]}}),
        ),
        (
            ("dynamodb:PutItem", "dynamodb:DeleteItem"),
            table,
            str({"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["callback#*"]}}),
        ),
        (("sqs:SendMessage",), str(get_att("KickoutQueue", "Arn")), "None"),
        (
            ("kms:Decrypt",),
            str({"Ref": "ZegoSecretKmsKeyArn"}),
            str({"StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}),
        ),
    }


def test_the_item_keys_the_callback_role_may_touch_are_the_ones_the_code_writes() -> None:
    from handler.fleet.callback_claims import claim_key
    from handler.fleet.keep_outs import item_key

    assert item_key(1, "r", "u").startswith("keepout#")
    assert claim_key(1, "room_enter", "1", "2").startswith("callback#")


def test_keep_outs_are_a_resource_of_the_iam_authenticated_api(template: Template) -> None:
    events = function_setting(template, "Events")
    routes = {(event["Properties"]["Path"], event["Properties"]["Method"]) for event in events.values()}
    assert routes == {("/kickouts", "post"), ("/keep-outs", "get"), ("/keep-outs/{room_id}/{user_id}", "delete")}
    # no authorizer of their own: the API's default, AWS_IAM
    assert all("Auth" not in event["Properties"] for event in events.values())


def test_the_function_reads_keep_outs_from_their_index_and_deletes_only_keep_outs(template: Template) -> None:
    from handler.fleet.keep_outs import BY_ROOM, KIND

    table = resource(template, "KickoutStateTable", "AWS::DynamoDB::Table")
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == BY_ROOM
    assert index["KeySchema"] == [
        {"AttributeName": "room_key", "KeyType": "HASH"},
        {"AttributeName": "user_id", "KeyType": "RANGE"},
    ]
    statements = policy_statements(template)
    queries = [statement for statement in statements if "dynamodb:Query" in as_list(statement["Action"])]
    assert [statement["Resource"] for statement in queries] == [
        {"Fn::Sub": "${KickoutStateTable.Arn}/index/" + BY_ROOM}
    ]
    deletes = [statement for statement in statements if "dynamodb:DeleteItem" in as_list(statement["Action"])]
    assert [statement["Condition"] for statement in deletes] == [
        {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{KIND}#*", "idempotency#*"]}}
    ]


def test_the_confirmed_share_alarm_divides_users_confirmed_by_users_kicked(template: Template) -> None:
    alarm = resource(template, "KickoutsConfirmedShareAlarm", "AWS::CloudWatch::Alarm")
    watched = {
        metric["Id"]: metric["MetricStat"]["Metric"]["MetricName"]
        for metric in alarm["Metrics"]
        if "MetricStat" in metric
    }
    assert watched == {"kicked": "UsersKicked", "confirmed": "KickoutsConfirmed"}
    [share] = [metric for metric in alarm["Metrics"] if metric.get("ReturnData")]
    assert share["Expression"] == "IF(kicked >= 20, FILL(confirmed, 0) / kicked, 1)"
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 0.5)


def test_api_invokes_the_function_with_its_own_permission_not_the_callers(template: Template) -> None:
    # SAM's default for AWS_IAM forwards the caller's credentials to Lambda,
    # which would make every caller need lambda:InvokeFunction as well.
    api = resource(template, "KickoutApi", "AWS::Serverless::Api")
    assert api["Auth"]["InvokeRole"] == "NONE"


def test_api_is_traced_and_throttled_from_parameters(template: Template) -> None:
    api = resource(template, "KickoutApi", "AWS::Serverless::Api")
    assert api["TracingEnabled"] is True
    assert api["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        },
        # ZIM's callbacks have their own: a raid's re-entries arrive at once, beyond the kickout route's few a second
        {
            "ResourcePath": "/~1zego~1callbacks",
            "HttpMethod": "POST",
            "ThrottlingRateLimit": {"Ref": "CallbackThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "CallbackThrottlingBurstLimit"},
        },
    ]


def test_zegos_limit_is_one_budget_the_function_learns_with_its_table(template: Template) -> None:
    variables = function_setting(template, "Environment")["Variables"]
    assert variables["ZEGO_RATE_LIMIT_PER_SECOND"] == {"Ref": "ZegoRateLimitPerSecond"}
    assert variables["KICKOUT_STATE_TABLE"] == {"Ref": "KickoutStateTable"}
    assert template["Parameters"]["ZegoRateLimitPerSecond"]["Default"] == 20
    # No per-environment share of the rate is left to add up: concurrency carries no rate arithmetic.
    assert not any("Rate" in name and "Environment" in name and "Fallback" not in name for name in variables)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"QueueMaximumConcurrency": 50},
        {"ApiThrottlingRateLimit": 100, "ApiThrottlingBurstLimit": 200},
        {"ReservedConcurrency": 7},
        {"ZegoRateLimitPerSecond": 5, "QueueMaximumConcurrency": 1000},
    ],
    ids=["defaults", "a wide queue", "a busy API", "reserved", "a low limit"],
)
def test_the_fallback_pace_keeps_every_environment_that_can_run_under_zegos_limit_together(
    template: Template, overrides: dict[str, float]
) -> None:
    from handler.aws.settings import settings_from
    from handler.wiring import fallback_rate_per_second

    # GIVEN the function's environment as the template sets it, with its parameters' defaults or these
    parameters = {name: parameter.get("Default") for name, parameter in template["Parameters"].items()}
    parameters |= {"ZegoAppId": 1, "ZegoSecretArn": "arn:aws:secretsmanager:eu-central-1:1:secret:s", **overrides}
    variables = function_setting(template, "Environment")["Variables"]
    environ = {
        name: str(parameters[value["Ref"]])
        for name, value in variables.items()
        if isinstance(value, dict) and value.get("Ref") in parameters
    }
    config = settings_from({**environ, "KICKOUT_STATE_TABLE": "kickout-state"})
    # AND the most environments that can run at once, reckoned from the parameters here, apart from the code
    reserved = int(parameters["ReservedConcurrency"])
    api = int(parameters["ApiThrottlingBurstLimit"]) + math.ceil(float(parameters["ApiThrottlingRateLimit"]) * 28)
    most = reserved or int(parameters["QueueMaximumConcurrency"]) + api
    # THEN so many environments, each pacing itself alone while the table is unreachable, stay within the budget
    assert most * fallback_rate_per_second(config) <= float(parameters["ZegoRateLimitPerSecond"]) * (1 - MARGIN) + 1e-9


def test_the_budget_table_is_on_demand_encrypted_and_reaped_by_ttl(template: Template) -> None:
    table = resource(template, "KickoutStateTable", "AWS::DynamoDB::Table")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


# --- SQS -------------------------------------------------------------------


def queue_event(template: Template) -> dict[str, Any]:
    """The queue's trigger: an event source mapping of its own (SAM's SQS event would add a managed policy)."""
    assert "Queue" not in function_setting(template, "Events")
    return resource(template, "KickoutFunctionQueue", "AWS::Lambda::EventSourceMapping")


def test_queue_event_reports_partial_batch_failures(template: Template) -> None:
    event = queue_event(template)
    assert event["FunctionName"] == {"Ref": "KickoutFunction.Alias"}  # the alias live: SnapStart applies to it
    assert event["EventSourceArn"] == get_att("KickoutQueue", "Arn")
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_batches_are_large_enough_to_fill_calls_of_fifty_users_and_set_by_parameters(template: Template) -> None:
    event = queue_event(template)
    assert event["BatchSize"] == {"Ref": "QueueBatchSize"}
    assert event["MaximumBatchingWindowInSeconds"] == {"Ref": "QueueBatchingWindowSeconds"}
    defaults = {name: parameter.get("Default") for name, parameter in template["Parameters"].items()}
    # Two rooms' single-user messages in one batch must make calls of 50 users.
    assert defaults["QueueBatchSize"] >= 2 * 50
    # Lambda takes a batch over 10 messages from a standard queue only with a batching window.
    assert defaults["QueueBatchingWindowSeconds"] >= 1


def test_queue_concurrency_is_capped_by_a_parameter_no_lower_than_the_sqs_minimum(template: Template) -> None:
    event = queue_event(template)
    assert event["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "QueueMaximumConcurrency"}}
    parameter = template["Parameters"]["QueueMaximumConcurrency"]
    assert parameter["Default"] == 2
    assert parameter["MinValue"] == 2


def test_queue_visibility_is_at_least_six_function_timeouts_plus_the_batching_window(
    template: Template,
) -> None:
    queue = resource(template, "KickoutQueue", "AWS::SQS::Queue")
    timeout = int(function_setting(template, "Timeout"))
    assert queue_event(template)["MaximumBatchingWindowInSeconds"] == {"Ref": "QueueBatchingWindowSeconds"}
    window = int(template["Parameters"]["QueueBatchingWindowSeconds"]["MaxValue"])
    assert int(queue["VisibilityTimeout"]) >= 6 * timeout + window


def test_queue_redrives_to_the_dead_letter_queue_after_twenty_receives(template: Template) -> None:
    queue = resource(template, "KickoutQueue", "AWS::SQS::Queue")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": get_att("KickoutDeadLetterQueue", "Arn"),
        "maxReceiveCount": 20,
    }


def shortest_ride_out(max_receives: int) -> int:
    """Seconds from a message's first receive until SQS would move it, when ZEGO fails it at every receive and each
    backoff is cut by the most jitter can take (docs/failure-handling.md "A ZEGO outage")."""
    from handler.entry.redelivery import backoff_seconds

    return sum(backoff_seconds(receive, jitter=lambda: 1.0) for receive in range(1, max_receives + 1))


def test_the_redrive_limit_rides_out_two_hours_of_zego_outage(template: Template) -> None:
    queue = resource(template, "KickoutQueue", "AWS::SQS::Queue")
    ride_out = shortest_ride_out(int(queue["RedrivePolicy"]["maxReceiveCount"]))
    assert ride_out >= 2 * 60 * 60
    # the figure docs/failure-handling.md and the template's comment give: 2 h 20 min
    assert ride_out // 60 == 140


def test_dead_letter_queue_keeps_messages_fourteen_days(template: Template) -> None:
    dlq = resource(template, "KickoutDeadLetterQueue", "AWS::SQS::Queue")
    queue = resource(template, "KickoutQueue", "AWS::SQS::Queue")
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 60 * 60
    # A redriven message keeps its first enqueue time, so the DLQ must outlive the queue.
    assert dlq["MessageRetentionPeriod"] > queue.get("MessageRetentionPeriod", 4 * 24 * 60 * 60)


@pytest.mark.parametrize("logical_id", ["KickoutQueue", "KickoutDeadLetterQueue"])
def test_queues_are_encrypted_at_rest(template: Template, logical_id: str) -> None:
    assert resource(template, logical_id, "AWS::SQS::Queue")["SqsManagedSseEnabled"] is True


def test_alarm_fires_when_any_message_is_visible_in_the_dead_letter_queue(template: Template) -> None:
    alarm = resource(template, "DeadLetterQueueAlarm", "AWS::CloudWatch::Alarm")
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": get_att("KickoutDeadLetterQueue", "QueueName")}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"


# --- metrics, dashboard, alarms --------------------------------------------


def code_metric_names() -> set[str]:
    """Every metric src/handler emits: the members of handler.aws.observability.MetricName.

    That the code emits exactly these is held by the tests below: every emit call names a member, and every
    member is emitted somewhere (Failed<Class> once per class audit.failure_class returns, ColdStart by
    Powertools when a handler asks for it).
    """
    from handler.aws.observability import MetricName

    return {str(name) for name in MetricName}


def calls_named(function: str) -> list[tuple[str, ast.Call]]:
    """(file, call) of every call of `function` (a plain name or an attribute) in src/handler."""
    calls = []
    for path in sorted(HANDLER_SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if called == function:
                    calls.append((path.name, node))
    return calls


def emitted_names() -> list[tuple[str, ast.expr]]:
    """(file, the metric name argument) of every observability.emit call in src/handler."""
    return [(file, call.args[0]) for file, call in calls_named("emit")]


def test_every_metric_goes_through_the_one_thread_safe_path() -> None:
    # GIVEN every call of Powertools' add_metric in src/handler
    # THEN there is one, inside observability.emit, which holds the lock worker threads need
    assert [file for file, _ in calls_named("add_metric")] == ["observability.py"]


def test_the_code_names_every_metric_it_emits_from_the_metric_name_enum() -> None:
    # GIVEN every emit call in src/handler
    calls = emitted_names()
    assert calls
    # THEN each names a MetricName member, or the one computed name, MetricName.failed(<failure class>)
    for file, name in calls:
        member = isinstance(name, ast.Attribute) and isinstance(name.value, ast.Name) and name.value.id == "MetricName"
        failed = (
            isinstance(name, ast.Call)
            and isinstance(name.func, ast.Attribute)
            and ast.unparse(name.func) == "MetricName.failed"
        )
        assert member or failed, f"{file}: emit({ast.unparse(name)}) is not a MetricName"


def test_every_metric_name_in_the_enum_is_emitted_by_the_code() -> None:
    from handler.aws.observability import MetricName

    # GIVEN the names the emit calls use, the failure classes, and the handlers' cold start metric
    used = {ast.unparse(name).removeprefix("MetricName.") for _, name in emitted_names()}
    failed = {f"Failed{kind}" for kind in failure_classes()}
    cold_start = any(
        "capture_cold_start_metric=True" in path.read_text(encoding="utf-8") for path in HANDLER_SOURCE.rglob("*.py")
    )
    # THEN each member is one of them: a name no code emits would be a dashboard line that stays empty
    for member in MetricName:
        if member is MetricName.COLD_START:
            assert cold_start
        elif member.value.startswith("Failed"):
            assert member.value in failed, member
        else:
            assert member.name in used, f"MetricName.{member.name} is never emitted"
    # AND each failure class has its member
    assert failed <= {member.value for member in MetricName}


def failure_classes() -> set[str]:
    """The strings audit.failure_class can return."""
    tree = ast.parse((HANDLER_SOURCE / "entry" / "audit.py").read_text(encoding="utf-8"))
    (function,) = (
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "failure_class"
    )
    return {
        node.value.value
        for node in ast.walk(function)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def filled(template: Template, text: str, variables: dict[str, Any] | None = None) -> str:
    """A !Sub string with each ${Name} or ${Resource.Attribute} replaced by <<...>>, after checking it resolves
    (to a variable of the !Sub, a parameter, a resource or a pseudo parameter)."""

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        resource_name = name.split(".", 1)[0]
        assert (
            name in (variables or {})
            or name.startswith("AWS::")
            or resource_name in template["Resources"]
            or name in template["Parameters"]
        ), f"${{{name}}} names nothing in the template"
        return f"<<{name}>>"

    return re.sub(r"\$\{([^}!]+)\}", placeholder, text)


def dashboard_variables(template: Template) -> dict[str, Any]:
    """The variables of the dashboard body's !Sub."""
    sub = resource(template, "KickoutDashboard", "AWS::CloudWatch::Dashboard")["DashboardBody"]["Fn::Sub"]
    variables: dict[str, Any] = sub[1] if isinstance(sub, list) else {}
    return variables


def dashboard(template: Template) -> dict[str, Any]:
    sub = resource(template, "KickoutDashboard", "AWS::CloudWatch::Dashboard")["DashboardBody"]["Fn::Sub"]
    body = sub[0] if isinstance(sub, list) else sub
    parsed: dict[str, Any] = json.loads(filled(template, body, dashboard_variables(template)))
    return parsed


def charted(template: Template) -> list[tuple[str, str, dict[str, str], str | None]]:
    """(namespace, metric, dimensions, statistic) for every line of every metric widget."""
    lines = []
    for widget in dashboard(template)["widgets"]:
        if widget["type"] != "metric":
            continue
        properties = widget["properties"]
        for row in properties["metrics"]:
            options = row[-1] if isinstance(row[-1], dict) else {}
            fields = [value for value in row if isinstance(value, str)]
            if not fields:
                assert "expression" in options, row  # metric math over the lines above
                continue
            # No "..." shorthand: every line spells out its namespace, name and dimensions.
            assert "." not in fields[:2], row
            dimensions = dict(zip(fields[2::2], fields[3::2], strict=True))
            lines.append((fields[0], fields[1], dimensions, options.get("stat", properties.get("stat"))))
    return lines


def alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {
        logical_id: found["Properties"]
        for logical_id, found in template["Resources"].items()
        if found["Type"] == "AWS::CloudWatch::Alarm"
    }


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its single metric, or each MetricStat of its metric math."""
    if "MetricName" in alarm:
        return [{key: alarm[key] for key in ("Namespace", "MetricName", "Dimensions")}]
    return [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]


def custom_metric_dimensions(template: Template) -> dict[str, Any]:
    """Powertools' EMF dimension on every custom metric: service = POWERTOOLS_SERVICE_NAME."""
    return {"service": environment(template)["POWERTOOLS_SERVICE_NAME"]}


def charted_custom_metric_dimensions(template: Template) -> dict[str, str]:
    """The same on the dashboard: the placeholder of the !Sub variable whose value is POWERTOOLS_SERVICE_NAME."""
    [service] = [
        name
        for name, value in dashboard_variables(template).items()
        if value == environment(template)["POWERTOOLS_SERVICE_NAME"]
    ]
    return {"service": f"<<{service}>>"}


def test_dashboard_body_is_json_once_its_placeholders_are_filled(template: Template) -> None:
    # GIVEN the dashboard body, with every ${...} naming a parameter, resource or pseudo parameter
    # WHEN the placeholders are filled
    body = dashboard(template)
    # THEN it parses, and no two widgets overlap on the 24-column grid
    cells: set[tuple[int, int]] = set()
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24, widget["properties"]["title"]
        area = {
            (x, y)
            for x in range(widget["x"], widget["x"] + widget["width"])
            for y in range(widget["y"], widget["y"] + widget["height"])
        }
        assert not cells & area, f"{widget['properties']['title']} overlaps another widget"
        cells |= area


def test_dashboard_charts_every_metric_the_code_emits_and_no_other(template: Template) -> None:
    # GIVEN the metric names in src/handler and the namespace and service the template gives Powertools
    namespace = environment(template)["POWERTOOLS_METRICS_NAMESPACE"]
    emitted = code_metric_names()
    # WHEN the dashboard's custom metrics are read
    custom = [(name, dimensions) for ns, name, dimensions, _ in charted(template) if ns == namespace]
    # THEN each metric the code emits has a line, under the dimensions Powertools gives it
    assert {name for name, _ in custom} == emitted
    for name, dimensions in custom:
        expected = charted_custom_metric_dimensions(template)
        if name == "ColdStart":  # Powertools adds the function's name to this one
            expected = {"function_name": "<<KickoutFunction>>", **expected}
        assert dimensions == expected, name
    assert not {ns for ns, *_ in charted(template)} - {namespace, "AWS/Lambda", "AWS/SQS", "AWS/ApiGateway"}


def test_dashboard_shows_zego_latency_p50_and_p99_and_every_failure_class(template: Template) -> None:
    lines = charted(template)
    assert {stat for _, name, _, stat in lines if name == "ZegoLatency"} >= {"p50", "p99"}
    assert {name for _, name, _, _ in lines if name.startswith("Failed")} == {
        f"Failed{kind}" for kind in failure_classes()
    }
    assert "ZegoCallsPerUser" in {name for _, name, _, _ in lines}


@pytest.mark.parametrize(
    ("namespace", "metric", "dimensions"),
    [
        ("AWS/Lambda", "Errors", {"FunctionName": "<<KickoutFunction>>"}),
        ("AWS/Lambda", "Throttles", {"FunctionName": "<<KickoutFunction>>"}),
        ("AWS/Lambda", "Duration", {"FunctionName": "<<KickoutFunction>>"}),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": "<<KickoutDeadLetterQueue.QueueName>>"}),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "<<KickoutQueue.QueueName>>"}),
        ("AWS/ApiGateway", "4XXError", {"ApiName": "<<AWS::StackName>>", "Stage": "v1"}),
        ("AWS/ApiGateway", "5XXError", {"ApiName": "<<AWS::StackName>>", "Stage": "v1"}),
        ("AWS/ApiGateway", "Latency", {"ApiName": "<<AWS::StackName>>", "Stage": "v1"}),
    ],
)
def test_dashboard_charts_the_stacks_own_aws_metrics(
    template: Template, namespace: str, metric: str, dimensions: dict[str, str]
) -> None:
    assert (namespace, metric, dimensions) in [(ns, name, dims) for ns, name, dims, _ in charted(template)]


def test_api_metrics_are_found_under_the_name_and_stage_the_dashboard_uses(template: Template) -> None:
    # API Gateway publishes under ApiName (the RestApi's name) and Stage; the dashboard assumes both.
    api = resource(template, "KickoutApi", "AWS::Serverless::Api")
    assert api["Name"] == {"Ref": "AWS::StackName"}
    assert api["StageName"] == "v1"


def test_dashboard_shows_the_state_of_every_alarm(template: Template) -> None:
    (widget,) = (widget for widget in dashboard(template)["widgets"] if widget["type"] == "alarm")
    assert sorted(widget["properties"]["alarms"]) == sorted(f"<<{logical_id}.Arn>>" for logical_id in alarms(template))


def test_every_alarm_notifies_the_alarm_topic_only_when_one_is_given(template: Template) -> None:
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    assert template["Conditions"]["NotifyAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    notify = {"Fn::If": ["NotifyAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for logical_id, alarm in alarms(template).items():
        assert alarm["AlarmActions"] == notify, logical_id
        assert alarm["OKActions"] == notify, logical_id
        assert alarm["TreatMissingData"] == "notBreaching", logical_id


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("", True),
        ("arn:aws:sns:eu-central-1:123456789012:kickout-alarms", True),
        ("arn:aws:sns:eu-central-1:123456789012:ops.fifo", True),
        ("arn:aws:sqs:eu-central-1:123456789012:kickout-alarms", False),
        ("kickout-alarms", False),
    ],
)
def test_alarm_topic_parameter_takes_an_sns_topic_arn_or_nothing(
    template: Template, value: str, accepted: bool
) -> None:
    pattern = template["Parameters"]["AlarmTopicArn"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is accepted


def test_alarms_on_custom_metrics_watch_metrics_the_code_emits(template: Template) -> None:
    # GIVEN every metric any alarm reads
    namespace = environment(template)["POWERTOOLS_METRICS_NAMESPACE"]
    watched = [metric for alarm in alarms(template).values() for metric in alarm_metrics(alarm)]
    custom = [metric for metric in watched if metric["Namespace"] == namespace]
    # THEN each custom one is emitted by the code, under Powertools' dimensions (or the alarm never fires)
    assert custom, "no alarm watches a metric of the function's own"
    for metric in custom:
        assert metric["MetricName"] in code_metric_names()
        assert {dimension["Name"]: dimension["Value"] for dimension in metric["Dimensions"]} == (
            custom_metric_dimensions(template)
        )


@pytest.mark.parametrize(
    ("metric", "alarm_id"), [("ParkingFailed", "ParkingFailedAlarm"), ("BackoffFailed", "BackoffFailedAlarm")]
)
def test_a_broken_delivery_guarantee_alarms_in_the_first_minute_it_happens(
    template: Template, metric: str, alarm_id: str
) -> None:
    # GIVEN a metric whose every count is a message that did not get the handling docs/failure-handling.md plans
    alarm = resource(template, alarm_id, "AWS::CloudWatch::Alarm")
    # THEN its alarm watches it, sums it per minute, and fires on the first minute that is not zero
    assert alarm["MetricName"] == metric
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 60, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    # AND the dashboard charts the metric beside its twin
    failures = [
        widget
        for widget in dashboard(template)["widgets"]
        if ["Kickout", "ParkingFailed"] in [line[:2] for line in widget["properties"].get("metrics", [])]
    ]
    assert ["Kickout", metric] in [line[:2] for widget in failures for line in widget["properties"]["metrics"]]


def test_error_rate_alarm_fires_above_5_percent_of_invocations_over_5_minutes(template: Template) -> None:
    alarm = resource(template, "FunctionErrorRateAlarm", "AWS::CloudWatch::Alarm")
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    for query_id, metric_name in (("errors", "Errors"), ("invocations", "Invocations")):
        stat = queries[query_id]["MetricStat"]
        assert stat["Metric"]["Namespace"] == "AWS/Lambda"
        assert stat["Metric"]["MetricName"] == metric_name
        assert stat["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "KickoutFunction"}}]
        assert (stat["Stat"], stat["Period"]) == ("Sum", 300)
        assert queries[query_id]["ReturnData"] is False
    assert queries["error_rate"]["Expression"] == "IF(invocations > 0, 100 * errors / invocations, 0)"
    assert queries["error_rate"]["ReturnData"] is True
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "GreaterThanThreshold",
        5,
        1,
    )


def test_rate_limit_alarm_fires_when_zego_refuses_for_rate_in_3_of_5_minutes(template: Template) -> None:
    alarm = resource(template, "ZegoRateLimitedAlarm", "AWS::CloudWatch::Alarm")
    assert alarm["MetricName"] == "FailedRateLimited"
    assert (alarm["Statistic"], alarm["Period"]) == ("Sum", 60)
    assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == (3, 5)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


def test_rate_limit_alarm_names_the_codes_zim_py_counts_as_rate_limited(template: Template) -> None:
    from handler.zego import zim

    description = resource(template, "ZegoRateLimitedAlarm", "AWS::CloudWatch::Alarm")["AlarmDescription"]
    (listed,) = re.findall(r"\(codes ([\d, ]+)\)", description)
    assert tuple(int(code) for code in listed.split(", ")) == zim.codes_of(zim.CodeClass.RATE_LIMITED)


def test_queue_age_alarm_ignores_a_blip_and_fires_long_before_a_message_could_be_moved(template: Template) -> None:
    # GIVEN what a short ZEGO blip costs a message (three failed receives and their backoffs, at most), and how long
    # SQS keeps a message that ZEGO fails at every receive
    from handler.entry.redelivery import backoff_seconds

    queue = resource(template, "KickoutQueue", "AWS::SQS::Queue")
    blip = sum(backoff_seconds(receive, jitter=lambda: 0.0) for receive in range(1, 4))
    ride_out = shortest_ride_out(int(queue["RedrivePolicy"]["maxReceiveCount"]))
    # THEN the age alarm watches the queue, stays quiet through the blip and fires long before anything is moved
    alarm = resource(template, "QueueAgeAlarm", "AWS::CloudWatch::Alarm")
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": get_att("KickoutQueue", "QueueName")}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert blip < alarm["Threshold"] < ride_out / 4


# --- outputs and deploy config ---------------------------------------------


def test_outputs_expose_the_api_url_queues_and_function(template: Template) -> None:
    outputs = {name: output["Value"] for name, output in template["Outputs"].items()}
    assert outputs == {
        "KickoutApiUrl": {"Fn::Sub": "https://${KickoutApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1/kickouts"},
        "KickoutCallbackUrl": {
            "Fn::Sub": "https://${KickoutApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1/zego/callbacks"
        },
        "KickoutQueueUrl": {"Ref": "KickoutQueue"},
        "KickoutDeadLetterQueueUrl": {"Ref": "KickoutDeadLetterQueue"},
        "KickoutFunctionArn": {"Ref": "KickoutFunction.Alias"},
        "KickoutDashboardUrl": {
            "Fn::Sub": "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}"
            "#dashboards:name=${KickoutDashboard}"
        },
    }


@pytest.mark.parametrize("config_env", ["default", "staging"])
def test_samconfig_overrides_only_declared_parameters_with_allowed_values(template: Template, config_env: str) -> None:
    # GIVEN the overrides `sam deploy --config-env <config_env>` will pass
    config = tomllib.loads(SAMCONFIG_PATH.read_text(encoding="utf-8"))
    deploy = config[config_env]["deploy"]["parameters"]
    overrides = dict(item.split("=", 1) for item in shlex.split(deploy["parameter_overrides"]))
    parameters = template["Parameters"]
    # THEN each names a template parameter, every parameter without a default is given,
    # and each value passes that parameter's constraints
    assert set(overrides) <= set(parameters)
    assert {name for name, spec in parameters.items() if "Default" not in spec} <= set(overrides)
    for name, value in overrides.items():
        spec = parameters[name]
        if "AllowedValues" in spec:
            assert value in [str(allowed) for allowed in spec["AllowedValues"]], name
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), name
        if "MinValue" in spec:
            assert float(value) >= float(spec["MinValue"]), name
        if "MaxValue" in spec:
            assert float(value) <= float(spec["MaxValue"]), name
    assert config[config_env]["global"]["parameters"]["stack_name"] == {"default": "kickout"}.get(
        config_env, f"kickout-{config_env}"
    )
    assert deploy["capabilities"] == "CAPABILITY_IAM"


# --- least privilege and hardening -------------------------------------------------------------------------------

SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
# Managed policies a role of the stack may hold, and why AWS leaves no narrower choice.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",  # the function's own log group
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",  # X-Ray takes no resource-level permissions
    # API Gateway's account-wide logging role (SetApiGatewayAccountRole): the policy AWS documents for it
    "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
}
QUEUES = ("KickoutQueue", "KickoutDeadLetterQueue")


@pytest.fixture(scope="module")
def translated() -> Template:
    """The template after the SAM transform, as CloudFormation will create it (kickout_dev/sam_translate.py)."""
    if not SAM_PYTHON.exists() and not os.environ.get("CI"):
        pytest.skip("the SAM CLI is not installed (make sam)")
    done = subprocess.run(
        [str(SAM_PYTHON), "-m", "kickout_dev.sam_translate", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    loaded: Template = json.loads(done.stdout)
    return loaded


def roles(translated: Template) -> dict[str, dict[str, Any]]:
    return {
        logical_id: found["Properties"]
        for logical_id, found in translated["Resources"].items()
        if found["Type"] == "AWS::IAM::Role"
    }


def managed_policy_arns(role: dict[str, Any]) -> list[str]:
    """A role's managed policies, with `!Sub arn:${AWS::Partition}:...` read as the aws partition."""
    arns = []
    for arn in role.get("ManagedPolicyArns", []):
        text = arn["Fn::Sub"] if isinstance(arn, dict) else arn
        arns.append(text.replace("${AWS::Partition}", "aws"))
    return arns


def inline_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every inline statement of a role; a conditional one counts as granted."""
    statements = []
    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            statements.append(statement.get("Fn::If", [None, statement])[1])
    return statements


def test_no_role_holds_a_managed_policy_beyond_those_aws_leaves_no_narrower_choice_for(translated: Template) -> None:
    # GIVEN every role the stack creates, SAM's generated ones included
    found = roles(translated)
    assert "KickoutFunctionRole" in found
    # THEN each managed policy is one of the few allowed: none reaches SQS (AWSLambdaSQSQueueExecutionRole would
    # receive and delete the messages of any queue in the account)
    for logical_id, role in found.items():
        arns = managed_policy_arns(role)
        assert set(arns) <= ALLOWED_MANAGED_POLICIES, logical_id
        assert not [arn for arn in arns if "SQS" in arn.upper()], logical_id


def test_sqs_actions_are_granted_only_on_the_two_queues_each_for_its_part(translated: Template) -> None:
    # GIVEN every SQS action any inline statement of the function's role allows
    role = roles(translated)["KickoutFunctionRole"]
    granted: dict[str, set[str]] = {}
    for statement in inline_statements(role):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert action != "*", statement
            assert not str(action).endswith(":*"), statement
            if str(action).startswith("sqs:"):
                for target in as_list(statement["Resource"]):
                    assert isinstance(target, dict), statement
                    assert "Fn::GetAtt" in target, statement
                    granted.setdefault(target["Fn::GetAtt"][0], set()).add(str(action))
    # THEN the queue is read (receive, delete, attributes), its messages backed off while ZEGO fails (visibility)
    # and sent again when a batch had no time for them, and the DLQ written to (parking, failed async invokes)
    assert granted == {
        "KickoutQueue": {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",
            "sqs:SendMessage",
        },
        "KickoutDeadLetterQueue": {"sqs:SendMessage"},
    }


def test_no_inline_statement_allows_every_resource(translated: Template) -> None:
    for logical_id, role in roles(translated).items():
        for statement in inline_statements(role):
            for target in as_list(statement["Resource"]):
                assert "*" not in json.dumps(target), (logical_id, statement)


def test_the_queue_trigger_is_the_function_reading_the_queue_with_that_role(translated: Template) -> None:
    # GIVEN the only event source mapping of the stack
    mappings = [
        found for found in translated["Resources"].values() if found["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert len(mappings) == 1
    # THEN it reads the kickout queue for the function (whose role holds the receive/delete/attributes grant)
    assert mappings[0]["Properties"]["EventSourceArn"] == get_att("KickoutQueue", "Arn")
    assert mappings[0]["Properties"]["FunctionName"] == {"Ref": "KickoutFunctionAliaslive"}
    function = translated["Resources"]["KickoutFunction"]["Properties"]
    assert function["Role"] == get_att("KickoutFunctionRole", "Arn")


@pytest.mark.parametrize("logical_id", QUEUES)
def test_each_queue_refuses_requests_made_without_tls(template: Template, logical_id: str) -> None:
    # GIVEN the queue policies that name the queue
    policies = [
        found["Properties"]
        for found in template["Resources"].values()
        if found["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": logical_id} in found["Properties"]["Queues"]
    ]
    # THEN one denies every SQS action to anyone when the request is not over TLS
    denials = [
        statement
        for policy in policies
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny"
        and statement["Principal"] == "*"
        and "sqs:*" in as_list(statement["Action"])
        and get_att(logical_id, "Arn") in as_list(statement["Resource"])
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denials) == 1


STACK_UUID = {"StackUuid": {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}}
"""The unique part of the stack's id: the same for the stack's whole life, new for a stack deployed again."""


def test_the_dead_letter_queue_admits_as_source_only_the_queues_that_redrive_to_it(template: Template) -> None:
    # GIVEN the queues whose RedrivePolicy names the DLQ, and the ARN each will have (from its QueueName)
    sources = []
    for logical_id in QUEUES:
        queue = resource(template, logical_id, "AWS::SQS::Queue")
        if queue.get("RedrivePolicy", {}).get("deadLetterTargetArn") == get_att("KickoutDeadLetterQueue", "Arn"):
            name, variables = queue["QueueName"]["Fn::Sub"]
            arn = f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}"
            sources.append({"Fn::Sub": [arn, variables]})
    assert sources
    # THEN the DLQ's RedriveAllowPolicy lists exactly those
    dlq = resource(template, "KickoutDeadLetterQueue", "AWS::SQS::Queue")
    assert dlq["RedriveAllowPolicy"] == {"redrivePermission": "byQueue", "sourceQueueArnList": sources}


def test_the_named_queue_is_named_after_the_stacks_id_so_a_stack_deployed_again_does_not_collide(
    template: Template,
) -> None:
    # GIVEN the queue's name: it must be known before the queue exists (the DLQ admits it by ARN), yet a stack
    # deleted and deployed again must not find its name taken by the queue the old stack kept (DeletionPolicy)
    name, variables = resource(template, "KickoutQueue", "AWS::SQS::Queue")["QueueName"]["Fn::Sub"]
    # THEN it holds the stack id's unique part, not the stack's name, and fits SQS's 80 characters
    assert variables == STACK_UUID
    assert "AWS::StackName" not in name
    assert len(name.replace("${StackUuid}", "0" * 36)) <= 80


@pytest.mark.parametrize(
    "logical_id",
    [
        "KickoutQueue",
        "KickoutDeadLetterQueue",
        "KickoutFunctionLogGroup",
        "KickoutApiAccessLogGroup",
        "KickoutCallbackFunctionLogGroup",
        "KickoutStateTable",
    ],
)
def test_what_holds_kickouts_or_the_audit_trail_outlives_the_stack(template: Template, logical_id: str) -> None:
    # GIVEN a resource whose loss would lose kickouts not yet done, parked ones, keep-outs in force, or who ordered
    # a kick
    declared = template["Resources"][logical_id]
    # THEN neither deleting the stack nor replacing the resource deletes it
    assert declared["DeletionPolicy"] == "Retain"
    assert declared["UpdateReplacePolicy"] == "Retain"


SECRET_ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:kickout/zego-server-secret-AbCdEf"


@pytest.mark.parametrize(
    "arn",
    [
        SECRET_ARN,
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:zego_key+1=a.b@c-Xy12Zq",
    ],
)
def test_secret_arn_parameter_takes_one_secrets_arn(template: Template, arn: str) -> None:
    assert re.fullmatch(template["Parameters"]["ZegoSecretArn"]["AllowedPattern"], arn)


@pytest.mark.parametrize("position", [0, len(SECRET_ARN) - 1, SECRET_ARN.index(":secret:") + 8, len(SECRET_ARN)])
@pytest.mark.parametrize("wildcard", ["*", "?"])
def test_secret_arn_parameter_refuses_a_wildcard_anywhere(template: Template, position: int, wildcard: str) -> None:
    # GIVEN a secret ARN with a wildcard that would widen GetSecretValue to other secrets
    widened = SECRET_ARN[:position] + wildcard + SECRET_ARN[position:]
    # THEN the parameter's pattern refuses it
    assert not re.fullmatch(template["Parameters"]["ZegoSecretArn"]["AllowedPattern"], widened)


def test_a_failed_asynchronous_invoke_is_retried_a_bounded_number_of_times_then_kept(translated: Template) -> None:
    # GIVEN the function's asynchronous invoke configuration
    (config,) = [
        found["Properties"]
        for found in translated["Resources"].values()
        if found["Type"] == "AWS::Lambda::EventInvokeConfig"
    ]
    # THEN retries are bounded, and what still fails goes to a queue the function's role may write to
    assert config["FunctionName"] == {"Ref": "KickoutFunction"}
    assert config["Qualifier"] == "live"  # the alias every trigger and the KickoutFunctionArn output invoke
    assert 0 <= config["MaximumRetryAttempts"] <= 2
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination["Fn::GetAtt"][0] in QUEUES
    role = roles(translated)["KickoutFunctionRole"]
    assert any(
        "sqs:SendMessage" in as_list(statement["Action"]) and destination in as_list(statement["Resource"])
        for statement in inline_statements(role)
    )


ACCESS_LOG_FIELDS = {"requestId", "principal", "method", "path", "status", "latency", "integrationLatency"}


def test_api_access_logs_are_json_lines_naming_the_caller_kept_as_long_as_the_functions(template: Template) -> None:
    # GIVEN the stage's access log setting
    setting = resource(template, "KickoutApi", "AWS::Serverless::Api")["AccessLogSetting"]
    # THEN it writes to a log group of the stack, kept as long as the function's logs
    destination = setting["DestinationArn"]["Fn::GetAtt"]
    assert destination[1] == "Arn"
    group = resource(template, destination[0], "AWS::Logs::LogGroup")
    assert (
        group["RetentionInDays"]
        == resource(template, "KickoutFunctionLogGroup", "AWS::Logs::LogGroup")["RetentionInDays"]
    )
    # AND each line is one JSON object with the fields the on-call needs, once API Gateway fills in $context
    filled_in = re.sub(r"\$context\.[A-Za-z.]+String", '"a quoted message"', setting["Format"])
    filled_in = re.sub(r"\$context\.[A-Za-z.]+", "value", filled_in)
    line = json.loads(filled_in)
    assert set(line) >= ACCESS_LOG_FIELDS
    assert "$context.identity.userArn" in setting["Format"]


def test_the_account_wide_api_gateway_logging_role_is_set_only_when_the_parameter_says_so(
    template: Template, translated: Template
) -> None:
    # GIVEN the parameter, off by default
    parameter = template["Parameters"]["SetApiGatewayAccountRole"]
    assert parameter["Default"] == "false"
    assert set(parameter["AllowedValues"]) == {"true", "false"}
    condition = template["Conditions"]["SetsApiGatewayAccountRole"]
    assert condition == {"Fn::Equals": [{"Ref": "SetApiGatewayAccountRole"}, "true"]}
    # THEN the account setting, and every resource it uses, exist only under that condition
    accounts = [
        logical_id for logical_id, found in template["Resources"].items() if found["Type"] == "AWS::ApiGateway::Account"
    ]
    assert accounts == ["ApiGatewayAccount"]
    account = template["Resources"]["ApiGatewayAccount"]
    assert account["Condition"] == "SetsApiGatewayAccountRole"
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    assert template["Resources"][role_id]["Condition"] == "SetsApiGatewayAccountRole"
    # AND the REST API (hence its stage) waits for it when it is set, through a handle that always exists
    rest_api = translated["Resources"]["KickoutApi"]
    handle = translated["Resources"][rest_api["DependsOn"]]
    assert handle["Type"] == "AWS::CloudFormation::WaitConditionHandle"
    assert "Condition" not in handle
    assert list(handle["Metadata"].values()) == [
        {"Fn::If": ["SetsApiGatewayAccountRole", {"Ref": "ApiGatewayAccount"}, ""]}
    ]


def test_reserved_concurrency_is_a_choice_reserving_nothing_by_default(template: Template) -> None:
    # Reserving takes from the account's pool for good (README "Configuration"); the queue and API are bounded anyway.
    reserved = function_setting(template, "ReservedConcurrentExecutions")
    condition, when_set, otherwise = reserved["Fn::If"]
    assert when_set == {"Ref": "ReservedConcurrency"}
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, 0]}]}
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == 0


def test_every_checkov_skip_gives_its_reason(template: Template) -> None:
    skips = [
        (logical_id, skip)
        for logical_id, found in template["Resources"].items()
        for skip in found.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for logical_id, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), logical_id
        assert len(skip.get("comment", "")) >= 30, (logical_id, skip["id"])


def test_every_cfn_lint_suppression_has_its_reason_on_the_line_above() -> None:
    lines = TEMPLATE_PATH.read_text(encoding="utf-8").splitlines()
    suppressions = [number for number, line in enumerate(lines) if "ignore_checks:" in line]
    assert suppressions
    for number in suppressions:
        rules = re.findall(r"\b[A-Z]+\d+\b", lines[number])
        assert rules, lines[number]
        above = lines[number - 1].strip()
        assert above.startswith("#"), lines[number]
        assert all(rule in above for rule in rules), (above, rules)


def test_the_serverless_rules_run_a_dead_letter_queue_unsuppressed_is_flagged(tmp_path: Path) -> None:
    # GIVEN a copy of the template without the DLQ's suppression of "a queue needs a RedrivePolicy"
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert "ignore_checks: [ES6000]" in text
    unsuppressed = tmp_path / "template.yaml"
    unsuppressed.write_text(text.replace("ignore_checks: [ES6000]", "ignore_checks: []"), encoding="utf-8")
    # WHEN cfn-lint checks it with the serverless rules
    matches = lint(unsuppressed)
    # THEN exactly that rule fires: the rules are loaded, and the suppression is what keeps the template clean
    assert [match.rule.id for match in matches] == ["ES6000"]


# --- one stack per environment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack_name", "service_name", "expected"),
    [
        ("kickout", "", "kickout"),
        ("kickout-staging", "", "kickout-staging"),
        ("kickout-staging", "moderation-staging", "moderation-staging"),
    ],
)
def test_the_service_name_is_the_stack_name_unless_given(
    template: Template, stack_name: str, service_name: str, expected: str
) -> None:
    # GIVEN a stack and its ServiceName parameter (empty by default)
    parameter = template["Parameters"]["ServiceName"]
    assert parameter["Default"] == ""
    assert re.fullmatch(parameter["AllowedPattern"], service_name)
    parameters = {"ServiceName": service_name}
    # WHEN CloudFormation resolves the function's service name, the alarms' dimension and the dashboard's
    resolved = evaluate(template, environment(template)["POWERTOOLS_SERVICE_NAME"], parameters, stack_name)
    watched = [
        evaluate(template, dimension["Value"], parameters, stack_name)
        for alarm in alarms(template).values()
        for metric in alarm_metrics(alarm)
        if metric["Namespace"] == environment(template)["POWERTOOLS_METRICS_NAMESPACE"]
        for dimension in metric["Dimensions"]
        if dimension["Name"] == "service"
    ]
    charted = {
        name: evaluate(template, value, parameters, stack_name) for name, value in dashboard_variables(template).items()
    }
    # THEN all three are the given name, or else the stack's
    assert resolved == expected
    assert watched
    assert set(watched) == {expected}
    assert charted == {"Service": expected}


@pytest.mark.parametrize("value", ["kickout", "kickout-staging", "moderation.eu_1", "a" * 128])
def test_service_name_parameter_accepts_a_dimension_value_a_stack_name_could_be(template: Template, value: str) -> None:
    assert re.fullmatch(template["Parameters"]["ServiceName"]["AllowedPattern"], value)


@pytest.mark.parametrize("value", ["-kickout", "kick out", "kickout/staging", "a" * 129])
def test_service_name_parameter_refuses_what_is_no_plain_name(template: Template, value: str) -> None:
    assert not re.fullmatch(template["Parameters"]["ServiceName"]["AllowedPattern"], value)


def samconfig_environments() -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = tomllib.loads(SAMCONFIG_PATH.read_text(encoding="utf-8"))
    return {name: section for name, section in config.items() if isinstance(section, dict)}


def test_each_samconfig_environment_deploys_a_stack_that_shares_nothing_observable(template: Template) -> None:
    # GIVEN every environment of samconfig.toml (`sam deploy --config-env NAME`)
    environments = samconfig_environments()
    assert {"default", "staging"} <= set(environments)
    seen: dict[str, set[str]] = {"stack": set(), "s3_prefix": set(), "service": set(), "ZEGO AppId": set()}
    for name, config in environments.items():
        stack_name = config["global"]["parameters"]["stack_name"]
        deploy = config["deploy"]["parameters"]
        overrides = dict(item.split("=", 1) for item in shlex.split(deploy["parameter_overrides"]))
        service = evaluate(template, environment(template)["POWERTOOLS_SERVICE_NAME"], overrides, stack_name)
        # THEN each has a stack, an S3 prefix and a service dimension of its own (and so its own alarms,
        # dashboard, queues and metric series), and a ZEGO AppId of its own (ZEGO's rate limit is per AppId)
        for kind, value in (
            ("stack", stack_name),
            ("s3_prefix", deploy["s3_prefix"]),
            ("service", service),
            ("ZEGO AppId", overrides["ZegoAppId"]),
        ):
            assert value not in seen[kind], f"[{name}] shares its {kind} {value!r} with another environment"
            seen[kind].add(value)


# --- SnapStart ---------------------------------------------------------------


@pytest.mark.parametrize("apply_on", ["None", "PublishedVersions"])
def test_snapstart_is_a_parameter_off_by_default_applied_to_the_published_alias(
    template: Template, translated: Template, apply_on: str
) -> None:
    # GIVEN the SnapStart parameter: Lambda's own ApplyOn values, off by default
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["Default"] == "None"
    assert apply_on in parameter["AllowedValues"]
    # THEN the function's SnapStart is that value, once the SAM transform is done
    function = translated["Resources"]["KickoutFunction"]["Properties"]
    assert function["SnapStart"] == {"ApplyOn": {"Ref": "SnapStart"}}
    # AND a version is published behind the alias live, which the API calls (SnapStart runs only published versions)
    (alias,) = [
        found["Properties"] for found in translated["Resources"].values() if found["Type"] == "AWS::Lambda::Alias"
    ]
    assert (alias["Name"], alias["FunctionName"]) == ("live", {"Ref": "KickoutFunction"})
    invoked_by_the_api = [
        found["Properties"]["FunctionName"]
        for found in translated["Resources"].values()
        if found["Type"] == "AWS::Lambda::Permission" and found["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    # (one permission a route; ZIM's callbacks have a function of their own, which no snapshot serves)
    assert {json.dumps(name) for name in invoked_by_the_api} == {
        json.dumps({"Ref": "KickoutCallbackFunction"}),
        json.dumps({"Ref": "KickoutFunctionAliaslive"}),
    }
    assert "KickoutFunctionAliaslive" in json.dumps(translated["Resources"]["KickoutApi"]["Properties"]["Body"])

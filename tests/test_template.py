"""template.yaml as a specification: what the stack must guarantee the code.

cfn-lint checks the template against the CloudFormation and SAM schemas; the
tests below pin the choices those schemas cannot know about (IAM scope, SQS
timings, ZEGO hosts).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
SAMCONFIG_PATH = ROOT / "samconfig.toml"
LINT_REGIONS = ["eu-central-1", "us-east-1"]

Template = dict[str, Any]


def lint(path: Path) -> list[Any]:
    """Every cfn-lint error and warning for the template at path."""
    matches: list[Any] = lint_file(path, config=ManualArgs(regions=LINT_REGIONS))
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


def policy_statements(template: Template) -> list[dict[str, Any]]:
    """Inline statements of every function policy (policy templates excluded)."""
    function = resource(template, "KickoutFunction", "AWS::Serverless::Function")
    statements: list[dict[str, Any]] = []
    for policy in function["Policies"]:
        if isinstance(policy, dict) and "Statement" in policy:
            statements.extend(policy["Statement"])
    return statements


def as_list(value: object) -> list[object]:
    """IAM allows a single action or resource in place of a list."""
    return list(value) if isinstance(value, list) else [value]


def get_att(logical_id: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


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
        pytest.param("VisibilityTimeout: 130", "VisibilityTimeout: 86400", id="visibility-over-12h"),
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


# --- function --------------------------------------------------------------


def test_function_runs_python_3_13_on_arm64_with_active_tracing(template: Template) -> None:
    assert function_setting(template, "Runtime") == "python3.13"
    assert function_setting(template, "Architectures") == ["arm64"]
    assert function_setting(template, "Tracing") == "Active"


def test_function_entry_point_is_the_handler_package(template: Template) -> None:
    function = resource(template, "KickoutFunction", "AWS::Serverless::Function")
    assert function["Handler"] == "handler.app.lambda_handler"
    assert function["CodeUri"] == "src/"
    assert (ROOT / "src" / "requirements.txt").is_file()


def test_powertools_is_configured_by_the_template_not_the_code(template: Template) -> None:
    variables = environment(template)
    assert variables["POWERTOOLS_SERVICE_NAME"] == "kickout"
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


def test_send_message_is_allowed_only_on_the_dead_letter_queue(template: Template) -> None:
    sends = [
        statement
        for statement in policy_statements(template)
        if any(action in {"sqs:SendMessage", "sqs:*", "*"} for action in as_list(statement["Action"]))
    ]
    assert len(sends) == 1
    assert sends[0]["Effect"] == "Allow"
    assert as_list(sends[0]["Action"]) == ["sqs:SendMessage"]
    assert as_list(sends[0]["Resource"]) == [get_att("KickoutDeadLetterQueue", "Arn")]


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
        }
    ]


def test_default_rates_add_up_to_at_most_zegos_20_requests_per_second(template: Template) -> None:
    # GIVEN the defaults: queue environments x each one's pace, plus what the API stage lets through
    defaults = {name: parameter.get("Default") for name, parameter in template["Parameters"].items()}
    queue = defaults["QueueMaximumConcurrency"] * defaults["QueueRatePerEnvironment"]
    api = max(defaults["ApiThrottlingRateLimit"], defaults["ApiThrottlingBurstLimit"])
    # THEN the fleet stays within ZEGO's per-AppId limit, and each environment learns its pace from the template
    assert queue + api <= 20
    assert function_setting(template, "Environment")["Variables"]["KICKOUT_QUEUE_RATE_PER_SECOND"] == {
        "Ref": "QueueRatePerEnvironment"
    }


# --- SQS -------------------------------------------------------------------


def queue_event(template: Template) -> dict[str, Any]:
    event: dict[str, Any] = function_setting(template, "Events")["Queue"]
    assert event["Type"] == "SQS"
    properties: dict[str, Any] = event["Properties"]
    return properties


def test_queue_event_reports_partial_batch_failures(template: Template) -> None:
    event = queue_event(template)
    assert event["Queue"] == get_att("KickoutQueue", "Arn")
    assert event["BatchSize"] == 10
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


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
    window = int(queue_event(template).get("MaximumBatchingWindowInSeconds", 0))
    assert int(queue["VisibilityTimeout"]) >= 6 * timeout + window


def test_queue_redrives_to_the_dead_letter_queue_after_five_receives(template: Template) -> None:
    queue = resource(template, "KickoutQueue", "AWS::SQS::Queue")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": get_att("KickoutDeadLetterQueue", "Arn"),
        "maxReceiveCount": 5,
    }


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


# --- outputs and deploy config ---------------------------------------------


def test_outputs_expose_the_api_url_queues_and_function(template: Template) -> None:
    outputs = {name: output["Value"] for name, output in template["Outputs"].items()}
    assert outputs == {
        "KickoutApiUrl": {"Fn::Sub": "https://${KickoutApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1/kickouts"},
        "KickoutQueueUrl": {"Ref": "KickoutQueue"},
        "KickoutDeadLetterQueueUrl": {"Ref": "KickoutDeadLetterQueue"},
        "KickoutFunctionArn": get_att("KickoutFunction", "Arn"),
    }


def test_samconfig_overrides_only_declared_parameters_with_allowed_values(template: Template) -> None:
    # GIVEN the overrides `sam deploy` will pass
    config = tomllib.loads(SAMCONFIG_PATH.read_text(encoding="utf-8"))
    deploy = config["default"]["deploy"]["parameters"]
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
    assert config["default"]["global"]["parameters"]["stack_name"] == "kickout"
    assert deploy["capabilities"] == "CAPABILITY_IAM"

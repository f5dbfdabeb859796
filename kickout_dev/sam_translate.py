"""template.yaml as CloudFormation sees it: the SAM transform applied offline, printed as JSON.

Runs in the SAM CLI's environment (`.venv-sam/bin/python -m kickout_dev.sam_translate template.yaml`): the
translator pins its own pydantic. No AWS call: managed policy ARNs come from the translator's bundled map.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
from samcli.yamlhelper import yaml_parse
from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

PSEUDO_PARAMETERS = {
    "AWS::Region": "eu-central-1",
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "kickout",
    "AWS::URLSuffix": "amazonaws.com",
}


def translate(template_path: Path) -> dict[str, Any]:
    template = yaml_parse(template_path.read_text(encoding="utf-8"))
    for resource in template["Resources"].values():
        # As `sam validate` does: the translator wants the S3 location `sam deploy` would upload the code to.
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in resource["Properties"]:
            resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"
    translated: dict[str, Any] = Translator(
        None, Parser(), boto_session=boto3.session.Session(region_name=PSEUDO_PARAMETERS["AWS::Region"])
    ).translate(
        template,
        parameter_values=dict(PSEUDO_PARAMETERS),
        get_managed_policy_map=lambda: get_bundled_managed_policy_map("aws") or {},
    )
    return translated


if __name__ == "__main__":
    json.dump(translate(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True)

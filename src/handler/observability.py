"""Logger, Tracer and Metrics, built once per execution environment.

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE
(set in template.yaml), never from code.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
# Only botocore is patched: X-Ray's httplib patch would record the signed ZEGO URL (nonce and signature) in traces.
tracer = Tracer(patch_modules=["botocore"])
metrics = Metrics()

# urllib3 logs request lines, signed query included, at DEBUG; keep them out whatever the log level.
logging.getLogger("urllib3").setLevel(logging.WARNING)

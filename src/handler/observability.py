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

# At DEBUG, urllib3 logs request lines (the signed query) and botocore logs response bodies (GetSecretValue's
# SecretString); urllib3 even warns with the full URL when a reply's headers do not parse. Keep all of them out
# of the logs whatever level the function or Lambda's log config asks for.
logging.getLogger("urllib3").setLevel(logging.ERROR)
for library in ("botocore", "boto3"):
    logging.getLogger(library).setLevel(logging.WARNING)

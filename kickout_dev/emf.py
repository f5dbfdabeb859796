"""The function's metrics as it prints them: CloudWatch's embedded metric format (EMF), one JSON document a line."""

from __future__ import annotations

import json
from collections import defaultdict


def emf_metrics(printed: str) -> dict[str, list[float]]:
    """Every value of every metric the EMF documents among the printed lines declare (log lines have no `_aws`)."""
    values: dict[str, list[float]] = defaultdict(list)
    for line in printed.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = document.get(metric["Name"])
                if isinstance(value, list):
                    values[metric["Name"]].extend(float(item) for item in value)
                elif value is not None:
                    values[metric["Name"]].append(float(value))
    return dict(values)

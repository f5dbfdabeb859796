"""AWS plumbing: the boto3 clients and their call bounds, the ServerSecret, the settings, Logger / Tracer / Metrics
and the metric names, SQS batch calls within AWS's limits."""

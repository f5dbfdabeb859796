"""The Lambda adapters, one per way in (api: POST /kickouts; queue: SQS batches; direct: a direct invoke), and what
they share: the kickout as they carry it out (kickouts) and its audit lines (audit)."""

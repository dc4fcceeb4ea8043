"""Names of the user attrs tunefleet keeps on studies and trials (readable in optuna-dashboard)."""

SPEC = "tunefleet.spec"  # study: the study spec, one JSON document
SOURCE = "tunefleet.source"  # trial: why it was queued (seed config, retry)
RETRY_OF = "tunefleet.retry_of"  # trial: the diverged trial it repeats at half the learning rate
WORKER = "tunefleet.worker"  # trial: host, pid and claim time of its worker
PRUNE = "tunefleet.prune"  # trial: detector, step and evidence that ended it
ERROR = "tunefleet.error"  # trial: the error that failed it

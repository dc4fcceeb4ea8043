"""The worker process: claim a trial, build model and data, train, report."""

"""The study coordinator and the `tunefleet` command line."""

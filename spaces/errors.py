class InputError(ValueError):
    """Bad user input: the CLI prints it as one line and exits non-zero."""

class StorageError(RuntimeError):
    """The storage cannot be reached or used; the message never holds a password."""

"""Expert priors of the seed documents as data, and the search spaces built from them.

Pure Python: nothing here imports torch or transformers, so the CLI stays fast.
"""

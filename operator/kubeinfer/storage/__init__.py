"""The storage initializer: fetch a model from its ``storageUri`` into the model repository.

It runs as the init container of every serving pod (``kubeinfer storage-init URI DEST``).

Modules, each with one job:

- ``uri``: parse a ``storageUri`` into a typed value and build the pod's storage plan (pure).
- ``layout``: decide where fetched files land in the repository (pure).
- ``credentials``: read the Secret-provided environment and redact secrets from text.
- ``errors``: the error classes and their exit codes.
- ``retrying``: bounded exponential backoff around one transient operation.
- ``http_source`` / ``s3_source``: the only modules that dial the network.
- ``fetch``: dispatch by scheme, stage, then install atomically into the repository.
- ``main``: the command line.

This ``__init__`` imports nothing on purpose: the pure pod builder imports ``storage.uri`` and
must not pull boto3 or the network code in with it.
"""

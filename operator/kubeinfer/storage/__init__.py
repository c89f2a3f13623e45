"""The storage initializer: fetch a model from its ``storageUri`` into the model repository.

It runs as the init container of every serving pod (``kubeinfer storage-init URI DEST``).

Modules, each with one job:

- ``layout``: decide where fetched files land in the repository (pure).
- ``credentials``: read the Secret-provided environment and redact secrets from text.
- ``errors``: the error classes and their exit codes.
- ``retrying``: bounded exponential backoff around one transient operation.
- ``http_source`` / ``s3_source``: the only modules that dial the network.
- ``fetch``: dispatch by scheme, stage, then install atomically into the repository.
- ``main``: the command line.

What a ``storageUri`` means (its grammar and the pod's storage plan) is the pure core's
``core.storage_uri``, shared by the pod builder and this initializer. This ``__init__`` imports
nothing on purpose, so importing one module never pulls boto3 or the network code in.
"""

"""The autoscaler's pure core: policy, per-pod signals, windows, cold-start learning, decide().

No I/O here: the autoscaler engine scrapes, keeps a ``SignalWindow`` and a ``ScalerState`` per
InferenceService, calls ``decide.decide(...)`` with ``now`` and acts on the returned result.
"""

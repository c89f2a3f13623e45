"""Real Triton (2.51, from the nvidia-pytriton wheel) for the local cluster and the tests.

``install`` keeps the wheel in its own virtualenv in the cache; ``standin`` is the one change
that lets this CPU-only, python-backend-only Triton load kubeinfer's configs; ``host`` is the
command the local kubelet runs for a Triton pod's serving container.
"""

"""kopf handlers: the only code that imports kopf. Thin: parse, call a reconciler or engine.

One module per job: ``lifecycle`` (kopf's settings, priming the store, starting the autoscaler
and the resync, stopping them), ``events`` (each watch event into the store, then to the
reconciler or, debounced, to its owner's refresh), ``resync`` (the periodic re-list and
reconcile), ``state`` (what the handlers share, kept in kopf's memo) and ``main`` (running
kopf with an ``OperatorConfig``). No module keeps globals set from outside.
"""

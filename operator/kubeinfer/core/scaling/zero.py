"""Scale to zero and back, pure: the hand-off between the autoscaler and kubeinfer-router.

Owns three rules for a service with minReplicas 0 (which the API allows only with the router):
- the autoscaler takes the last replica away only after ``scale_to_zero_after_s`` without
  demand, where demand is anything in flight or queued on the pods, any request the router
  answered or holds, or a wake; and only on evidence: a tick whose pods or router could not
  be scraped proves nothing and resets nothing, but never scales to zero;
- the autoscaler never writes 0 -> 1: at zero it holds, and the router alone wakes the
  service (its field manager, ``kubeinfer-router``, on the scale subresource) when a request
  arrives;
- a woken service (0 last tick, more now) counts as demand, so it gets a whole idle period
  again before it may go back, even if its first request was flushed between two scrapes.
``decide`` sees the policy with a floor of one replica (``floor``): load alone never takes a
service to zero, only this idle rule does. No clock here: ``now`` is passed in.
"""

from __future__ import annotations

import dataclasses

from kubeinfer.core.scaling import decide, policy, signals, state


def floor(pol: policy.ScalingPolicy) -> policy.ScalingPolicy:
    """The policy ``decide`` runs with: at least one replica while the service has any."""
    return dataclasses.replace(pol, min_replicas=1) if pol.min_replicas == 0 else pol


def demand(
    *,
    sample: signals.TickSample | None,
    router: signals.RouterSignals | None,
    previous_requests: float | None,
) -> bool | None:
    """True when this tick saw demand, False when it saw none, None when it cannot tell
    (the router did not answer: its counter is the one witness of requests at zero)."""
    busy = sample is not None and (sample.queue_depth_total > 0 or sample.request_rate_total > 0)
    if busy:
        return True
    if router is None:
        return None
    if router.held > 0:
        return True
    # A counter that moved either way (a restarted router starts again at zero) saw requests.
    return previous_requests is not None and router.requests_total != previous_requests


def hand_off(
    *,
    pol: policy.ScalingPolicy,
    result: decide.ScaleResult,
    before: state.ScalerState,
    sample: signals.TickSample | None,
    router: signals.RouterSignals | None,
    now: float,
) -> decide.ScaleResult:
    """``result`` (decided with ``floor(pol)``) with the scale-to-zero rules applied; the
    result unchanged when the service may not scale to zero."""
    if pol.min_replicas > 0:
        return result
    current = result.inputs.current
    seen = demand(sample=sample, router=router, previous_requests=before.router_requests)
    woken = before.previous_replicas == 0 and current > 0
    last = before.last_demand_time
    if seen or woken or last is None:
        last = now
    memory = dataclasses.replace(
        result.state,
        last_demand_time=last,
        router_requests=router.requests_total if router is not None else before.router_requests,
        previous_replicas=current,
    )
    wait = pol.scale_to_zero_after_s
    if current == 0:
        # No pods to scrape is no metrics failure, and 0 -> 1 is the router's write.
        memory = dataclasses.replace(
            memory, last_scale_time=before.last_scale_time, consecutive_failures=0
        )
        return dataclasses.replace(
            result,
            desired=0,
            reason=decide.Reason.AT_ZERO,
            clamps=(),
            message="Holding 0 replicas: no demand; kubeinfer-router holds the next request "
            "and scales to 1.",
            state=memory,
        )
    if woken and not result.changed:
        return dataclasses.replace(
            result,
            reason=decide.Reason.WOKEN_BY_ROUTER,
            message=f"Woken from 0 to {current} replicas by kubeinfer-router (a request "
            f"arrived); back to zero after {wait:.0f} s without demand.",
            state=memory,
        )
    idle = now - last
    # Evidence from both witnesses this tick: the pod answered (a replica still starting
    # or not answering is no sign of idleness) and so did the router (seen is not None).
    scraped = sample is not None
    if current == 1 and result.desired <= 1 and scraped and seen is False and idle >= wait:
        return dataclasses.replace(
            result,
            desired=0,
            clamps=(),
            reason=decide.Reason.SCALED_TO_ZERO,
            message=f"Scaling to zero from 1: no demand for {idle:.0f} s (scaleToZeroAfter"
            f"Seconds {wait:.0f}); kubeinfer-router holds the next request and wakes the "
            "service.",
            state=dataclasses.replace(memory, last_scale_time=now),
        )
    if current == 1 and result.reason is decide.Reason.AT_MIN:
        # The floor of one is decide's, not the spec's: say what takes the replica away.
        return dataclasses.replace(
            result,
            message=f"Holding 1 replica: {'demand' if seen else 'no demand'} for "
            f"{idle:.0f} s; scaling to zero after {wait:.0f} s without demand.",
            state=memory,
        )
    return dataclasses.replace(result, state=memory)

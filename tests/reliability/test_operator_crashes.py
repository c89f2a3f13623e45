"""kill -9 the operator at seeded random points while InferenceServices are created, updated
and deleted; after the last restart everything converges: exactly one Deployment and Service
per live InferenceService (none for deleted ones), every status Ready for its current
generation with the updated spec applied, and then no writes at all.

CI size: 30 InferenceServices x 5 rounds. `KUBEINFER_SOAK=1` (make soak) runs the issue's
100 x 20.
"""

from __future__ import annotations

import os
import random
import time

from tests.conftest import ClusterHandle
from tests.operator_process import OperatorProcess
from tests.reliability import kube
from tests.reliability.conftest import Figures, wait_for

SOAK = os.environ.get("KUBEINFER_SOAK") == "1"
SERVICES = 100 if SOAK else 30
ROUNDS = 20 if SOAK else 5
SEED = int(os.environ.get("KUBEINFER_RELIABILITY_SEED", "7"))


def manifest(name: str, cpu_m: int) -> dict[str, object]:
    return kube.isvc(
        name, gpu={"count": 0}, resources={"requests": {"cpu": f"{cpu_m}m"}, "limits": {}}
    )


def test_kill9_at_random_points_converges(
    cluster: ClusterHandle, operator: OperatorProcess, namespace: str, figures: Figures
) -> None:
    rng = random.Random(SEED)
    names = [f"svc-{i:03d}" for i in range(SERVICES)]
    live: dict[str, int] = {}  # name -> the CPU request its latest spec asks for
    kills = 0
    with kube.operator_restored(operator):
        for _round in range(ROUNDS):
            ops = []
            for name in rng.sample(names, k=SERVICES // 2):
                if name not in live:
                    ops.append(("create", name))
                elif rng.random() < 0.6:
                    ops.append(("update", name))
                else:
                    ops.append(("delete", name))
            # One kill per round, at a random op; the operator comes back a random number of
            # ops later, so some changes land while it is down and some while it starts.
            kill_at = rng.randrange(len(ops))
            back_at = min(len(ops), kill_at + rng.randrange(1, 6))
            for index, (verb, name) in enumerate(ops):
                if index == kill_at:
                    kube.kill9(operator)
                    kills += 1
                if index == back_at:
                    operator.start()
                if verb == "create":
                    live[name] = 100 + rng.randrange(10) * 10
                    kube.create(cluster, namespace, manifest(name, live[name]))
                elif verb == "update":
                    live[name] = 100 + rng.randrange(10) * 10
                    cluster.custom.patch_namespaced_custom_object(
                        kube.GROUP,
                        kube.VERSION,
                        namespace,
                        kube.PLURAL,
                        name,
                        {"spec": {"resources": {"requests": {"cpu": f"{live[name]}m"}}}},
                    )
                else:
                    del live[name]
                    kube.delete_isvc(cluster, namespace, name)
                time.sleep(rng.random() * 0.05)
            if operator.proc is None:
                operator.start()
            time.sleep(rng.random() * 2)  # sometimes mid-reconcile, sometimes settled
        # The last kill lands on a busy operator: everything was just changed.
        kube.kill9(operator)
        kills += 1
        restarted = time.monotonic()
        operator.start()

        def converged() -> bool:
            found = kube.children(cluster, namespace)
            if set(found) != set(live):
                return False
            for name, cpu_m in live.items():
                kinds = found[name]
                if any(len(kinds.get(k, [])) != 1 for k in ("Deployment", "Service")):
                    return False
                dep = kinds["Deployment"][0]
                container = dep.spec.template.spec.containers[0]
                if container.resources.requests.get("cpu") != f"{cpu_m}m":
                    return False
                # Rolled out: an update's new pods are up and the old ones gone, so the
                # status the operator reports has stopped moving.
                st = dep.status
                if st.observed_generation != dep.metadata.generation or not (
                    dep.spec.replicas == st.replicas == st.updated_replicas == st.ready_replicas
                ):
                    return False
                if not kube.is_ready(cluster, namespace, name):
                    return False
            pods = cluster.core.list_namespaced_pod(namespace).items
            return not any(p.metadata.deletion_timestamp for p in pods)

        wait_for(converged, 240 if SOAK else 150, "convergence after the last kill -9", every=1)
        converge_s = time.monotonic() - restarted
        # Every child belongs to its live InferenceService (owner UID, controller reference).
        found = kube.children(cluster, namespace)
        for name in live:
            uid = kube.get_isvc(cluster, namespace, name)["metadata"]["uid"]
            for items in found[name].values():
                refs = items[0].metadata.owner_references
                assert refs and refs[0].uid == uid and refs[0].controller, (name, refs)
        # Converged means quiet: after the restart pass the operator stops writing. It may
        # still be finishing that pass when the objects already look right, so allow up to
        # 60 s to reach a 5 s window with zero writes, and report what it wrote meanwhile.
        settled_from = kube.writes(operator, namespace)
        quiet_deadline = time.monotonic() + 60
        while True:
            before = kube.writes(operator, namespace)
            time.sleep(5)
            extra = kube.writes(operator, namespace) - before
            if extra == 0 or time.monotonic() > quiet_deadline:
                break
        late_writes = before - settled_from
        quiet_s = time.monotonic() - restarted
        assert operator.proc is not None and operator.proc.poll() is None, operator.log()[-3000:]
        figures.record(
            "operator_crashes",
            services=SERVICES,
            rounds=ROUNDS,
            seed=SEED,
            kills=kills,
            live_at_end=len(live),
            converge_after_last_kill_s=round(converge_s, 1),
            writes_after_children_and_status_correct=late_writes,
            quiet_5s_window_reached_after_s=round(quiet_s, 1),
            writes_in_final_5s=extra,
        )
        assert extra == 0, operator.metrics_text("kubeinfer_api_writes_total")

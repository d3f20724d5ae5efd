"""What a probe creates and which clusters it probes (pure: unit-tested by table).

The probe pod asks for as little as a pod can: the pause image, no service account token, no
service links, a tiny request, non-root with every capability dropped, no restarts, and a
deadline. It tolerates every taint, so that it measures whether the cluster can start a pod at
all, not whether a free untainted node happens to exist; it is deleted as soon as it was seen
Running (or given up on).
"""

from __future__ import annotations

from typing import Any

from kokpit.controllers.probe.options import PROBE_LABEL, ProbeOptions

Object = dict[str, Any]


def probe_pod(options: ProbeOptions) -> Object:
    """The manifest of one probe pod (a generated name: leftovers never collide)."""
    resources = {"cpu": "1m", "memory": "8Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "kokpit-probe-",
            "namespace": options.namespace,
            "labels": {PROBE_LABEL: "true", "app.kubernetes.io/managed-by": "kokpit"},
        },
        "spec": {
            "containers": [
                {
                    "name": "pause",
                    "image": options.image,
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {"requests": resources, "limits": resources},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "runAsUser": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "activeDeadlineSeconds": options.active_deadline_seconds,
            "tolerations": [{"operator": "Exists"}],
        },
    }


def probed(cluster: Object) -> bool:
    """Whether a Cluster is probed: its control plane has been made (an endpoint in its
    status) and it is not being deleted. A Cluster still being created is not a business
    cluster yet and counts nothing; one that is up but unreachable counts as a failure."""
    meta, status = cluster.get("metadata") or {}, cluster.get("status") or {}
    return bool(status.get("endpoint")) and not meta.get("deletionTimestamp")


def pod_phase(pod: Object) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")

"""The local cluster's kubelet: labelled pods run for real, as processes on their pod IPs.

``plan`` (pure) turns a pod spec into host commands, paths and probes; ``podstatus`` (pure)
renders the pod status the kubelet reports; ``kubelet`` runs the processes and writes status.
"""

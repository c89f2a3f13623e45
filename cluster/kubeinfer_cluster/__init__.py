"""kubeinfer's local cluster: a developer tool, not part of the product.

`build` compiles a real control plane (Kubernetes, etcd, kwok, helm) from the Go module proxy
into a cache; `run` starts it on loopback with fake GPU nodes; `cli` is the `kubeinfer-cluster`
command. The operator never imports this package.
"""

"""``python -m kubeinfer_cluster.kubelet``: the cluster starts this as its kubelet component."""

import sys

from kubeinfer_cluster.kubelet.kubelet import main

sys.exit(main())

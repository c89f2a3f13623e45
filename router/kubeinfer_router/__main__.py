"""`python -m kubeinfer_router`: the same as the `kubeinfer-router` console script."""

import sys

from kubeinfer_router import cli

sys.exit(cli.main())

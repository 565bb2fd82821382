"""The stream: the pure core (``core``), the shared ground (``shared``), the Queue API edge (``taskcluster``)
and the running parts built on them (``worker``, ``replay``). See docs/architecture.md for the layers."""

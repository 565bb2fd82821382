"""A real Treeherder backend on loopback, run from its source tarball as an external program.

``tc-treeherder treeherder up``/``down``/``push``, the demo's ``--treeherder`` and the integration tests use
these modules: ``install`` (the tarball unpacked into the cache, Treeherder's own Python 3.12 venv keyed by
its requirements), ``services`` (Postgres and Redis from Debian), ``local`` (the database, Treeherder's API
server, the jobs ingester of integrations/treeherder/, registering pushes, reading the API).
"""


class TreeherderError(RuntimeError):
    """The local Treeherder could not be installed, started or asked; the message says what to do."""

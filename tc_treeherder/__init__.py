"""The faces of tc-treeherder: the ``tc-treeherder`` command (``cli``, ``commands``) and what operators see
(``observability``). Everything it runs lives below, in ``streams`` and ``connectors``."""

"""The Taskcluster Queue API as the stream sees it: the client (``queue_client``) and the one async step
that fetches a task's definition and artifacts around the pure core (``lookup``). Shared by the worker, the
replay and the faces (``transform``, ``explain``)."""

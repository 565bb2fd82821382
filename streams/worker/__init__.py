"""The worker: the Faust app (``app``), its tables (``tables``), the batch pipeline (``batch_pipeline``,
``inbox``), the event processor without Faust (``processor``) and the gap watcher (``gaps``)."""

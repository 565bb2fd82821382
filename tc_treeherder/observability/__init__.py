"""What operators see: Prometheus metrics, consumer lag, the worker's status page and the explain logic.

Nothing here sits on a hot path: collectors read the counters the processes already keep, at scrape time.
"""

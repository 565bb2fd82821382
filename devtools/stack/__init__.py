"""The local stack: a real single-node Kafka (KRaft) and a real RabbitMQ on loopback, started without Docker.

``tc-treeherder up``/``down`` and the integration tests' ``brokers`` fixture use these modules. A broker that
already answers at the configured address is reused and never stopped by us.
"""


class StackError(RuntimeError):
    """A broker could not be installed, started or stopped; the message says why and what to do."""

"""The CLI's development commands (``up``, ``down``, ``demo``, ``simulate``, ``queue-standin``): present in a
source checkout, absent from the installed wheel."""

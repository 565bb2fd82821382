# The bridge's processes (tc-treeherder source | worker | sink) for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tc_treeherder ./tc_treeherder
COPY streams ./streams
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --create-home bridge \
    && mkdir -p /var/lib/tc-treeherder && chown bridge /var/lib/tc-treeherder
USER bridge
ENTRYPOINT ["tc-treeherder"]

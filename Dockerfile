# hyperv-exporter container image.
#
#   docker build -t hyperv-exporter .
#   docker run --rm -p 10020:10020 hyperv-exporter --demo                 # simulated fleet, nothing else needed
#   docker run -d -p 10020:10020 \
#     -v /srv/hyperv/hyperv.yml:/etc/hyperv_exporter/hyperv.yml:ro \
#     -v /srv/hyperv/password:/etc/hyperv_exporter/password:ro hyperv-exporter
#
# The configuration is read from /etc/hyperv_exporter/hyperv.yml (the exporter's default
# --config.file); relative paths in it (password_file, ca_file) resolve against that directory.
# docs/deployment.md has the details; tests/test_deploy_docker.py lints this file with hadolint and
# checks that it copies exactly what the package needs.

# Builder: every wheel the exporter needs, at the versions in constraints.txt (the ones the test
# suite ran with). All dependencies ship manylinux wheels, so no compiler is needed here either.
# The venv is built here too; pip and setuptools are then removed from it, since the runtime
# image installs nothing.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY exporter/ exporter/
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt . \
 && python -m venv /opt/hyperv-exporter \
 && /opt/hyperv-exporter/bin/pip install --no-index --find-links /wheels /wheels/hyperv_exporter-*.whl \
 && /opt/hyperv-exporter/bin/pip uninstall --yes pip setuptools

# Runtime: the same base image (the venv's interpreter symlink points at its python3.11), the
# venv, a fixed non-root user, and nothing else: no compiler, no pip, no sources.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="hyperv-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Hyper-V integration services over WinRM" \
      org.opencontainers.image.licenses="Apache-2.0"
# No documentation/source URL label: the project has no canonical public address yet. Add one at
# build time if you publish it: docker build --label org.opencontainers.image.source=https://...
# A fixed uid/gid (the exporter's port number) so that file permissions on mounted secrets and
# Kubernetes' runAsUser can name it; no home directory and no login shell.
RUN groupadd --system --gid 10020 hyperv-exporter \
 && useradd --system --uid 10020 --gid 10020 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hyperv-exporter \
 && mkdir -p /etc/hyperv_exporter
COPY --from=builder /opt/hyperv-exporter /opt/hyperv-exporter
ENV PATH=/opt/hyperv-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10020:10020
EXPOSE 10020
# hyperv-sim and hyperv-guest-agent are in the same venv: docker run --entrypoint hyperv-sim ...
ENTRYPOINT ["/opt/hyperv-exporter/bin/hyperv-exporter"]

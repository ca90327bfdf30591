# bids_ketamine_fc as a BIDS-App container image.
#
#   docker build -t bids/bids_ketamine_fc:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out \
#       bids/bids_ketamine_fc:0.1.0 /data /out participant --participant-label 01
#
# Three stages: "templateflow" downloads the TemplateFlow files the app reads (it needs internet
# at build time), "build" installs the package and its dependencies (all binary wheels from PyPI)
# into a virtual environment, and the final stage copies both onto a clean base: no compiler,
# no pip cache, no source tree. See docs/container.rst.

# Base image: a Debian slim image with CPython 3.11 in /usr/local (the official python image).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS templateflow
# The package's TemplateFlow client, pinned so that the layer is reproducible and cached apart
# from the application code.
ARG TEMPLATEFLOW_VERSION=25.1.2
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow
RUN python -m venv /opt/tf-client \
    && /opt/tf-client/bin/pip install "templateflow==${TEMPLATEFLOW_VERSION}"
# Exactly the files bids_ketamine_fc reads, listed once in bids_ketamine_fc/templateflow_files.py
# (which imports only templateflow, so this layer is rebuilt only when that list changes). The build
# fails if any file is missing or is not real content.
COPY bids_ketamine_fc/templateflow_files.py /opt/tf-client/
RUN /opt/tf-client/bin/python /opt/tf-client/templateflow_files.py \
    && chmod -R a+rX /opt/templateflow

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets in only the package, setup.cfg, pyproject.toml, README.md and LICENSE.
COPY . /src
# Binary wheels only, so no compiler is ever needed; the one exception is docopt (pure Python,
# published only as a source archive; pybids -> num2words needs it).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --only-binary=:all: --no-binary=docopt /src \
    && /opt/venv/bin/bids_ketamine_fc --version

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG IMAGE_TAG=bids/bids_ketamine_fc:${VERSION}
ARG BUILD_DATE=unknown
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="bids_ketamine_fc" \
      org.opencontainers.image.description="BIDS-App: seed-to-voxel resting-state connectivity from fMRIPrep outputs; responders vs non-responders to ketamine in chronic pain" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/bids-apps/bids_ketamine_fc" \
      org.opencontainers.image.url="https://github.com/bids-apps/bids_ketamine_fc" \
      org.opencontainers.image.documentation="https://github.com/bids-apps/bids_ketamine_fc/tree/main/docs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.ref.name="${IMAGE_TAG}"

# A home that any user id can write (docker run -u, Singularity/Apptainer map the caller's id).
RUN useradd --no-log-init --create-home --home-dir /home/bidsapp --uid 1000 --user-group bidsapp \
    && chmod 0777 /home/bidsapp
COPY --from=templateflow /opt/templateflow /opt/templateflow
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:${PATH} \
    HOME=/home/bidsapp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NIPYPE_NO_ET=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    BIDS_KETAMINE_FC_CONTAINER=${IMAGE_TAG}

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids_ketamine_fc"]
CMD ["--help"]

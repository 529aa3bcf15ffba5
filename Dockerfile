# akhbar: one image for the worker, the producers, migrations and replays.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /app
# Dependencies first (cached layer), exactly as locked; no dev tools in the image.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY akhbar ./akhbar
COPY worker ./worker
COPY producers ./producers
COPY models ./models
COPY migrations ./migrations
COPY alembic.ini sources.toml ./
COPY seeds ./seeds
RUN uv sync --frozen --no-dev && useradd --system --uid 10001 akhbar && mkdir -p /data && chown akhbar /data
USER akhbar
ENV PATH="/app/.venv/bin:$PATH"
ENTRYPOINT ["akhbar"]
CMD ["worker", "--concurrency", "2"]

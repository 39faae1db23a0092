# One image for every process type; the command picks the type (see Procfile, docker-compose.yml,
# deploy/kubernetes/). Runtime dependencies only: requirements.txt, never requirements-dev.txt.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATIC_ROOT=/app/staticfiles \
    PORT=8000

RUN groupadd --system --gid 10001 formation \
    && useradd --system --uid 10001 --gid formation --home-dir /app --no-create-home formation

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-compile -r requirements.txt

COPY --chown=formation:formation . .

# Static files are collected at build time; settings need their required variables to load,
# so this step gets throwaway values that never reach a running container.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 SECRET_KEY=build-only \
    python manage.py collectstatic --noinput --verbosity 0

# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000

# The web process type by default; others override the command (docker compose, Kubernetes).
CMD ["sh", "-c", "exec gunicorn --config gunicorn.conf.py --bind 0.0.0.0:${PORT} project.wsgi"]

"""Process-wide lifecycle state shared by a web worker and its views (no Django imports, so
gunicorn can load it before Django is set up)."""

import threading

# Set in a web worker once SIGTERM asked it to stop (processes.gunicorn_worker): /ready then answers
# 503 (core.health.readiness), so a probe still served from the listen backlog says "stopping".
STOPPING = threading.Event()

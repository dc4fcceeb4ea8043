"""optuna-dashboard on a tunefleet storage, served with threads so one slow
request does not block the page."""

from __future__ import annotations

import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # one line per request is noise in a terminal
        pass


def serve(storage, artifact_store, host: str, port: int, shown_url: str) -> None:
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
    server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    print(f"optuna-dashboard on http://{host}:{port}/ (storage {shown_url}); Ctrl-C to stop",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

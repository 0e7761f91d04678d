"""Production serving with gunicorn; each worker builds its own app (no shared memory)."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication


class IdPServer(BaseApplication):
    def __init__(self, options: dict, factory=None) -> None:
        self.options = options
        self.factory = factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        if self.factory is not None:
            return self.factory()
        from idp import create_app

        return create_app()


def run(*, host: str, port: int, workers: int, factory=None) -> None:
    IdPServer(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "accesslog": "-",
            "forwarded_allow_ips": "127.0.0.1",
            "timeout": 30,
        },
        factory,
    ).run()

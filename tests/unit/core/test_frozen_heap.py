"""A served worker freezes what exists once its app is built (``freeze_long_lived``): a full
collection then walks only what requests made since, not the whole heap in the middle of one
of them."""

from __future__ import annotations

import gc

from idp.wsgi_server import IdPServer


def test_a_worker_leaves_its_app_out_of_later_collections():
    built = []

    def factory():
        app = {"routes": [object() for _ in range(1000)]}  # stands for the app: long-lived
        built.append(app)
        return app

    assert gc.get_freeze_count() == 0
    try:
        app = IdPServer({}, factory).load()
        assert app is built[0]
        assert gc.get_freeze_count() > 1000
        tracked = {id(obj) for obj in gc.get_objects()}
        assert id(app) not in tracked and id(app["routes"]) not in tracked
        made_after = [object()]
        assert id(made_after) in {id(obj) for obj in gc.get_objects()}
    finally:
        gc.unfreeze()

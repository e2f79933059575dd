"""The app's backend pool: one pool per process, one lock per loaded model, and the registry's chat flag
honoured when the pool loads a model itself (the path the arena and the Models-tab chat take)."""

from __future__ import annotations

import functools
import inspect
import threading

from cai import models
from cai.backend_pool import BackendPool

HH = "\n\nHuman: Hi there\n\nAssistant:"


def test_a_model_registered_as_chat_is_rendered_with_its_chat_template(db):
    models.register_model(db, "tiny-chat", "tiny", chat=True)
    models.register_model(db, "tiny-base", "tiny")
    pool = BackendPool()  # no loader: the real one, as the app uses it
    chat, _ = pool.get(models.get_model(db, "tiny-chat"))
    base, _ = pool.get(models.get_model(db, "tiny-base"))
    assert (chat.chat, base.chat) == (True, False)
    assert chat.render(HH) == "<bos><|user|>\nHi there<eos>\n<|assistant|>\n"
    assert base.render(HH) == HH


def test_two_names_for_one_loaded_model_share_its_lock(db):
    models.register_model(db, "tiny-a", "tiny")
    models.register_model(db, "tiny-b", "tiny")
    pool = BackendPool()
    backend_a, lock_a = pool.get(models.get_model(db, "tiny-a"))
    backend_b, lock_b = pool.get(models.get_model(db, "tiny-b"))
    assert backend_a is backend_b  # one set of weights in memory ...
    with lock_a:  # ... serving one request at a time, whichever name a request used
        assert lock_b.locked()


def test_the_shared_pool_tells_apart_two_databases_rows_of_one_id(tmp_path):
    """One process may serve several databases (tests, a second app): row ids repeat across them, the
    models behind them need not."""
    from cai import store
    from cai.backend_pool import shared_pool

    first, second = store.connect(tmp_path / "a.db"), store.connect(tmp_path / "b.db")
    models.register_model(first, "plain", "tiny")
    models.register_model(second, "chatty", "tiny", chat=True)
    rows = models.get_model(first, "plain"), models.get_model(second, "chatty")
    assert rows[0]["id"] == rows[1]["id"] == 1
    plain, _ = shared_pool().get(rows[0])
    chatty, _ = shared_pool().get(rows[1])
    assert (plain.render(HH), chatty.render(HH)) == (HH, "<bos><|user|>\nHi there<eos>\n<|assistant|>\n")


def pools_in(blocks) -> list[BackendPool]:  # type: ignore[no-untyped-def]
    """Every backend pool an event handler of `blocks` reaches through its closures."""
    found: dict[int, BackendPool] = {}

    def walk(obj, depth: int = 0) -> None:  # type: ignore[no-untyped-def]
        if isinstance(obj, BackendPool):
            found[id(obj)] = obj
        elif depth < 5 and isinstance(obj, functools.partial):
            for part in (obj.func, *obj.args, *obj.keywords.values()):
                walk(part, depth + 1)
        elif depth < 5 and inspect.isfunction(obj):
            for cell in obj.__closure__ or ():
                try:
                    walk(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass

    for block_fn in blocks.fns.values():
        walk(block_fn.fn)
    return list(found.values())


def test_every_tab_and_the_rater_page_serve_from_one_pool(db_path):
    """The Models-tab chat, the Arena tab, the rater view and the /arena page: one pool, so one lock per model."""
    from ui import app, arena

    workbench, page = pools_in(app.build_app(db_path, "tiny")), pools_in(arena.page_for(db_path))
    assert len(workbench) == len(page) == 1  # before: one pool per tab (three in the workbench)
    assert workbench[0] is page[0]


def test_one_request_at_a_time_per_model_from_two_threads(db):
    """What the pool promises the arena: two sides asking for one model take turns."""
    from cai.backends.base import ScriptedBackend

    models.register_model(db, "tiny", "tiny")
    row = models.get_model(db, "tiny")
    pool = BackendPool(loader=lambda row: ScriptedBackend())
    inside, most = [0], [0]

    def request() -> None:
        _, lock = pool.get(row)
        for _ in range(200):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1

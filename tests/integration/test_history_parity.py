"""One history for every scorer: ``POST /score`` and batch scoring read and feed the same history store,
and the outcomes recorded in triage reach it (as they are recorded, and at start-up).

Everything is real: the seeded triage database, the session's small model bundle, DuckDB stores in
the test's folder, the app through its HTTPS test client.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from features.history_store import HistoryStore
from features.io import write_table
from features.schema import validate_manifest
from models.bundle import load_bundle
from models.predict import score_frame
from serve.batch import score_file
from serve.triage.accounts import Principal
from serve.triage.cases import OutcomeInput, record_outcome
from serve.triage.db import Case, User
from serve.triage.export import OutcomePusher
from serve.triage.scoring import DECLARED_COLUMNS, split_reasons

KEY = ["declaration_id", "line_no"]
NEW_FROM = pd.Timestamp("2026-06-27")  # lines from this day on are scored; the earlier ones are history


@pytest.fixture(scope="module")
def world(labelled_manifest) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(earlier labelled lines, later lines as the request sends them): one world split by date."""
    valid = validate_manifest(labelled_manifest(4_000, seed=11, start="2026-05-01", end="2026-06-30")).valid
    earlier = valid[valid["declared_at"] < NEW_FROM].reset_index(drop=True)
    later = valid.loc[valid["declared_at"] >= NEW_FROM, list(DECLARED_COLUMNS)].reset_index(drop=True)
    return earlier, later


def request_lines(lines: pd.DataFrame) -> list[dict]:
    """The lines as JSON objects of ``POST /score``: ISO dates, no missing fields, plain Python values."""
    frame = lines.assign(declared_at=lines["declared_at"].dt.strftime("%Y-%m-%d")).astype(object)
    records = frame.where(frame.notna(), None).to_dict("records")
    return [{name: value for name, value in record.items() if value is not None} for record in records]


def filled_store(folder: Path, earlier: pd.DataFrame) -> HistoryStore:
    """A history store in ``folder`` holding the earlier lines."""
    store = HistoryStore(folder)
    assert store.append(earlier) == len(earlier)
    return store


def api_scores(body: dict) -> pd.DataFrame:
    """The scores of a ``POST /score`` answer, one row per line, indexed by line key."""
    frame = pd.DataFrame(body["scores"]).assign(reasons=lambda f: f["reasons"].map(tuple))
    return frame.set_index(KEY).sort_index()[["risk_score", "channel", "suspected_commodity", "reasons"]]


def batch_scores(path: Path) -> pd.DataFrame:
    """The scores of a scored batch file, as :func:`api_scores` gives them."""
    frame = pd.read_parquet(path)
    frame = pd.DataFrame(
        {
            "declaration_id": frame["declaration_id"].astype(str),
            "line_no": frame["line_no"].astype("int64"),
            "risk_score": frame["risk_score"].astype("float64"),
            "channel": frame["channel"].astype(str),
            "suspected_commodity": frame["suspected_commodity"].astype(str),
            "reasons": frame["reasons"].map(lambda text: tuple(split_reasons(text))),
        }
    )
    return frame.set_index(KEY).sort_index()


def keys_of(frame: pd.DataFrame) -> list[tuple[str, int]]:
    return sorted(zip(frame["declaration_id"].astype(str), frame["line_no"].astype("int64"), strict=True))


# The scoring-worker cases start worker processes (spawned, each building the model and its TreeSHAP
# tables): slow, like the tests that run whole commands; the web-process case stays in make test-fast.
@pytest.mark.parametrize("scored_in", [pytest.param("scoring worker", marks=pytest.mark.slow), "web process"])
def test_post_score_and_batch_scoring_give_the_same_scores_from_the_same_history(
    scored_in, world, make_client, scorer, model_dir, auth, tmp_path
):
    earlier, later = world
    api_store = filled_store(tmp_path / "api-history", earlier)
    batch_store = filled_store(tmp_path / "batch-history", earlier)
    lines = request_lines(later)
    write_table(pd.DataFrame(lines, columns=list(DECLARED_COLUMNS)), tmp_path / "incoming.parquet")
    # The service's own model (model_uri) scores in its worker processes; an injected scorer in its threads.
    model = {"model_uri": str(model_dir)} if scored_in == "scoring worker" else {"scorer": scorer}
    client = make_client(history_dir=str(api_store.directory), **model)
    assert (client.app.state.runtime.scoring is None) == (scored_in == "web process")

    response = client.post("/score", headers=auth("sup"), json={"lines": lines})
    score_file(
        tmp_path / "incoming.parquet",
        tmp_path / "scored.parquet",
        load_bundle(str(model_dir)),
        history=batch_store,
        num_threads=1,
    )

    assert response.status_code == 200, response.text
    assert (len(response.json()["scores"]), response.json()["rejected"]) == (len(later), [])
    from_api, from_batch = api_scores(response.json()), batch_scores(tmp_path / "scored.parquet")
    assert from_api.index.equals(from_batch.index)
    np.testing.assert_array_equal(from_api["risk_score"].to_numpy(), from_batch["risk_score"].to_numpy())
    pd.testing.assert_frame_equal(from_api, from_batch)
    if scored_in == "scoring worker":  # a worker stores the lines after its answer
        client.portal.call(client.app.state.runtime.scoring.settled)
    pd.testing.assert_frame_equal(api_store.read(), batch_store.read())


def test_the_history_changes_the_scores(world, model_dir, tmp_path):
    """Guard of the parity test: its lines' scores depend on the earlier lines in the store."""
    earlier, later = world
    bundle, valid = load_bundle(str(model_dir)), validate_manifest(later, "later").valid
    store = filled_store(tmp_path / "history", earlier)

    alone = score_frame(bundle, valid, num_threads=1)["risk_score"].to_numpy()
    with_history = score_frame(bundle, valid, num_threads=1, past=store)["risk_score"].to_numpy()

    assert (alone != with_history).sum() > len(later) // 10


def test_post_score_stores_the_lines_it_scores_as_batch_scoring_does(world, make_client, scorer, auth, tmp_path):
    earlier, later = world
    store = filled_store(tmp_path / "api-history", earlier)
    lines = request_lines(later)
    rejected = {**lines[0], "declaration_id": "BAD-1", "net_weight_kg": lines[0]["gross_weight_kg"] * 2}
    client = make_client(scorer=scorer, history_dir=str(store.directory))

    first = client.post("/score", headers=auth("sup"), json={"lines": [*lines, rejected]})
    stored = store.read()
    again = client.post("/score", headers=auth("sup"), json={"lines": lines})

    assert (first.status_code, again.status_code) == (200, 200)
    assert [r["declaration_id"] for r in first.json()["rejected"]] == ["BAD-1"]
    assert keys_of(stored) == sorted(keys_of(earlier) + keys_of(later))
    posted = stored.set_index(KEY).loc[[(d, float(n)) for d, n in keys_of(later)]]
    assert posted["inspected"].isna().all() and posted["misdeclared"].isna().all()
    assert len(store) == len(earlier) + len(later)  # scoring the same lines again adds nothing
    pd.testing.assert_frame_equal(api_scores(again.json()), api_scores(first.json()))


@pytest.mark.slow  # six scoring requests at once in the app's threads
def test_concurrent_requests_store_each_line_once(world, make_client, scorer, auth, tmp_path):
    """Requests run in a thread pool; their store writes must not race (a line stored twice)."""
    _, later = world
    store = HistoryStore(tmp_path / "history")
    client = make_client(scorer=scorer, history_dir=str(store.directory))
    batches = [request_lines(later.iloc[start : start + 120]) for start in (0, 40, 80, 0, 40, 80)]

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        statuses = list(
            pool.map(lambda lines: client.post("/score", headers=auth("sup"), json={"lines": lines}).status_code, batches)
        )

    assert statuses == [200] * len(batches)
    assert keys_of(store.read()) == keys_of(later.iloc[:200])


# ----------------------------------------------------------------------------- outcomes


def _open_case(engine, port: str, skip: int = 0) -> Case:
    with Session(engine) as db:
        return db.scalars(
            select(Case).where(Case.port == port, Case.queue_state == "open").order_by(Case.id).offset(skip).limit(1)
        ).one()


def _stored(store: HistoryStore) -> dict[tuple[str, int], tuple[float, float]]:
    """(inspected, misdeclared) of every stored line by key."""
    frame = store.read()
    return {
        (d, int(n)): (i, m)
        for d, n, i, m in zip(frame["declaration_id"], frame["line_no"], frame["inspected"], frame["misdeclared"], strict=True)
    }


def test_an_outcome_recorded_through_the_api_is_a_labelled_line_in_the_store(client, auth, engine, db_path):
    store = HistoryStore(db_path.parent / "history")  # make_settings' default history folder
    confirmed, released = _open_case(engine, "USLAX"), _open_case(engine, "USLAX", skip=1)
    path = f"/api/cases/{confirmed.id}/outcomes"
    key = (confirmed.declaration_id, confirmed.line_no)

    first = client.post(path, headers=auth("lax"), json={"result": "confirmed", "found_commodity": "antimony"})
    after_first = _stored(store)
    correction = client.post(path, headers=auth("sup"), json={"result": "clean", "corrects_outcome_id": first.json()["id"]})
    after_correction = _stored(store)
    not_inspected = client.post(
        f"/api/cases/{released.id}/outcomes", headers=auth("lax"), json={"result": "not_inspected", "note": "released"}
    )

    assert (first.status_code, correction.status_code, not_inspected.status_code) == (201, 201, 201)
    assert after_first == {key: (1.0, 1.0)}
    assert after_correction == {key: (1.0, 0.0)}
    assert _stored(store) == {key: (1.0, 0.0)}  # could not inspect: no label, nothing stored
    line = store.read().iloc[0]
    assert (line["declared_at"].date(), line["hs_code"], line["shipper_id"], line["port_of_discharge"]) == (
        confirmed.declared_at,
        confirmed.hs_code,
        confirmed.shipper_id,
        confirmed.port_of_discharge,
    )


def test_an_outcome_recorded_on_the_case_page_is_a_labelled_line_in_the_store(client, sign_in, engine, db_path):
    store = HistoryStore(db_path.parent / "history")
    case = _open_case(engine, "USLAX")
    csrf = sign_in(client, "lax")

    response = client.post(
        f"/cases/{case.id}/outcome",
        follow_redirects=False,
        data={"csrf_token": csrf, "result": "confirmed", "found_commodity": "gallium"},
    )

    assert response.status_code == 303
    assert _stored(store) == {(case.declaration_id, case.line_no): (1.0, 1.0)}


@pytest.mark.slow
def test_outcomes_recorded_on_case_pages_reach_the_store_through_the_scoring_worker(
    make_client, model_dir, sign_in, engine, tmp_path
):
    store = HistoryStore(tmp_path / "history")
    client = make_client(model_uri=str(model_dir), history_dir=str(store.directory))
    assert client.app.state.runtime.scoring is not None
    csrf = sign_in(client, "lax")
    confirmed, clean = _open_case(engine, "USLAX"), _open_case(engine, "USLAX", skip=1)

    answers = [
        client.post(f"/cases/{case.id}/outcome", follow_redirects=False, data={"csrf_token": csrf, **form}).status_code
        for case, form in ((confirmed, {"result": "confirmed", "found_commodity": "gallium"}), (clean, {"result": "clean"}))
    ]

    assert answers == [303, 303]
    assert _stored(store) == {
        (confirmed.declaration_id, confirmed.line_no): (1.0, 1.0),
        (clean.declaration_id, clean.line_no): (1.0, 0.0),
    }


class _RecordingStore:
    """A real store whose first write records, meanwhile, the outcome of another case (as another
    request thread would) and pushes it: the pusher must leave that one to the push running now."""

    def __init__(self, store: HistoryStore, pusher_and_case: list):
        self.store, self.pusher_and_case, self.batches, self.returned_meanwhile = store, pusher_and_case, [], []

    def append(self, lines: pd.DataFrame) -> int:
        self.batches.append(keys_of(lines))
        if len(self.batches) == 1:
            pusher, case_id = self.pusher_and_case
            with ThreadPoolExecutor(max_workers=1) as other:
                self.returned_meanwhile.append(other.submit(pusher.push, case_id).result())
        return self.store.append(lines)


def test_outcomes_recorded_during_a_push_go_in_the_next_push(engine, tmp_path):
    first, second = _open_case(engine, "USLAX"), _open_case(engine, "USLAX", skip=1)
    with Session(engine) as db:
        sup = db.scalars(select(User).where(User.username == "sup")).one()
    who = Principal(sup.id, "sup", "supervisor", frozenset(), "test", "web")
    for case in (first, second):
        with Session(engine) as db, db.begin():
            record_outcome(db, who, case.id, OutcomeInput(result="clean"))
    handle = []
    store = _RecordingStore(HistoryStore(tmp_path / "history"), handle)
    pusher = OutcomePusher(engine, store)
    handle += [pusher, second.id]

    changed = pusher.push(first.id)

    assert store.returned_meanwhile == [0]  # left to the push running
    assert store.batches == [[(first.declaration_id, first.line_no)], [(second.declaration_id, second.line_no)]]
    assert changed == 2
    assert _stored(store.store) == {(c.declaration_id, c.line_no): (1.0, 0.0) for c in (first, second)}


class _TimedStore:
    """A store that notes when each write starts and which lines it carries."""

    def __init__(self, store: HistoryStore):
        self.store, self.batches, self.started = store, [], []

    def append(self, lines: pd.DataFrame) -> int:
        self.started.append(time.monotonic())
        self.batches.append(sorted(keys_of(lines)))
        return self.store.append(lines)


def test_outcomes_recorded_within_the_push_interval_go_together_after_it(engine, tmp_path):
    cases = [_open_case(engine, "USHOU", skip=k) for k in range(3)]
    with Session(engine) as db:
        sup = db.scalars(select(User).where(User.username == "sup")).one()
    who = Principal(sup.id, "sup", "supervisor", frozenset(), "test", "web")
    for case in cases:
        with Session(engine) as db, db.begin():
            record_outcome(db, who, case.id, OutcomeInput(result="clean"))
    store = _TimedStore(HistoryStore(tmp_path / "history"))
    pusher = OutcomePusher(engine, store, min_interval=0.5)

    assert pusher.push(cases[0].id) == 1  # the first push goes at once
    with ThreadPoolExecutor(max_workers=1) as other:
        waiting = other.submit(pusher.push, cases[1].id)  # waits out the interval, then pushes
        later = [pusher.push(cases[2].id)]  # recorded meanwhile: joins the waiting push
        later.append(waiting.result())

    keys = [(c.declaration_id, c.line_no) for c in cases]
    assert store.batches == [[keys[0]], sorted(keys[1:])]
    assert store.started[1] - store.started[0] >= 0.5
    assert sorted(later) == [0, 2]  # one call left its outcome to the other, which pushed both
    assert _stored(store.store) == {key: (1.0, 0.0) for key in keys}


def test_a_negative_push_interval_is_refused(engine, tmp_path):
    with pytest.raises(ValueError, match="min_interval must be >= 0 seconds, got -1"):
        OutcomePusher(engine, HistoryStore(tmp_path / "history"), min_interval=-1)


def test_start_up_pushes_outcomes_recorded_while_the_store_was_elsewhere(make_client, scorer, auth, engine, tmp_path):
    confirmed, clean = _open_case(engine, "USLAX"), _open_case(engine, "USHOU")
    elsewhere = make_client(scorer=scorer, history_dir=str(tmp_path / "elsewhere"))
    assert (
        elsewhere.post(
            f"/api/cases/{confirmed.id}/outcomes",
            headers=auth("lax"),
            json={"result": "confirmed", "found_commodity": "germanium"},
        ).status_code
        == 201
    )
    assert elsewhere.post(f"/api/cases/{clean.id}/outcomes", headers=auth("hou"), json={"result": "clean"}).status_code == 201
    store = HistoryStore(tmp_path / "history-new")
    assert not store.directory.exists()

    make_client(scorer=scorer, history_dir=str(store.directory))
    synced = store.read()
    make_client(scorer=scorer, history_dir=str(store.directory))  # a second start-up changes nothing

    assert _stored(store) == {
        (confirmed.declaration_id, confirmed.line_no): (1.0, 1.0),
        (clean.declaration_id, clean.line_no): (1.0, 0.0),
    }
    pd.testing.assert_frame_equal(store.read(), synced)


# ----------------------------------------------------------------------------- scoring workers


def _hold_store(store: HistoryStore) -> duckdb.DuckDBPyConnection:
    """Open the store's database in this process: DuckDB's file lock keeps every other process
    (the scoring worker) waiting for it until the connection closes."""
    return duckdb.connect(str(store.path))


def _served_by_a_pool(world, make_client, model_dir, sign_in, tmp_path):
    """A signed-in client of an app whose POST /score runs in its scoring worker, over a store of the
    earlier lines; returns the client, the store, the pool and 100 later lines as a request's body."""
    earlier, later = world
    store = filled_store(tmp_path / "history", earlier)
    client = make_client(model_uri=str(model_dir), history_dir=str(store.directory))
    sign_in(client, "lax")
    return client, store, client.app.state.runtime.scoring, request_lines(later.iloc[:100])


@pytest.mark.slow
def test_post_score_runs_in_a_worker_process_while_pages_answer(world, make_client, model_dir, auth, sign_in, tmp_path):
    client, store, pool, lines = _served_by_a_pool(world, make_client, model_dir, sign_in, tmp_path)
    earlier, later = world
    workers = client.portal.call(pool.pids)

    held = _hold_store(store)
    with ThreadPoolExecutor(max_workers=1) as background:
        scoring = background.submit(client.post, "/score", headers=auth("sup"), json={"lines": lines})
        queue, case = client.get("/"), client.get(f"/cases/{_open_case(client.app.state.runtime.engine, 'USLAX').id}")
        answered_while_scoring = not scoring.done()
        held.close()
        scored = scoring.result(timeout=300)
    client.portal.call(pool.settled)  # the worker stores the lines after its answer

    assert os.getpid() not in workers and len(workers) == 1
    assert (queue.status_code, case.status_code, answered_while_scoring) == (200, 200, True)
    assert scored.status_code == 200, scored.text
    assert len(scored.json()["scores"]) == 100
    assert keys_of(store.read()) == sorted(keys_of(earlier) + keys_of(later.iloc[:100]))


@pytest.mark.slow
def test_a_killed_scoring_worker_fails_its_request_only_and_is_replaced(world, make_client, model_dir, auth, sign_in, tmp_path):
    client, store, pool, lines = _served_by_a_pool(world, make_client, model_dir, sign_in, tmp_path)
    (worker,) = client.portal.call(pool.pids)

    held = _hold_store(store)
    with ThreadPoolExecutor(max_workers=1) as background:
        scoring = background.submit(client.post, "/score", headers=auth("sup"), json={"lines": lines})
        os.kill(worker, signal.SIGKILL)
        failed = scoring.result(timeout=300)
    held.close()
    page = client.get("/")
    again = client.post("/score", headers=auth("sup"), json={"lines": lines})
    (replacement,) = client.portal.call(pool.pids)

    assert failed.status_code == 503 and "scoring worker stopped" in failed.json()["detail"]
    assert page.status_code == 200
    assert again.status_code == 200 and len(again.json()["scores"]) == 100
    assert replacement not in (worker, os.getpid())

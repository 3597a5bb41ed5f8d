"""The history store as incremental state: same features as the full past, which copy wins, outcomes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from features import history_store
from features.history import HISTORY_COLUMNS, HistoryFeatures, PastEvents, line_keys
from features.history_store import FileHistory, HistoryStore, KeyFilter, history_frame, winning_copies
from features.schema import validate_manifest
from training.synthetic import generate_manifest

# Each example scores a store twice (about 1.3 s): 40 in make test, 3 in make test-fast.
PROPERTY_EXAMPLES = 3 if os.environ.get("MISDECLARE_TEST_FAST") else 40


def fitted(lines: pd.DataFrame) -> HistoryFeatures:
    return HistoryFeatures(label_delay_days=30, tenure_unknown_days=60).fit(lines)


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    lines = validate_manifest(generate_manifest(6_000, 11, "2024-01-01", "2025-12-31")).valid
    return lines.sort_values("declared_at", kind="stable").reset_index(drop=True)


def _features(history: HistoryFeatures, lines: pd.DataFrame, past) -> pd.DataFrame:
    return history.transform(lines, past=past)[history.numeric_features_].reset_index(drop=True)


@pytest.mark.parametrize("recent_days", [365, 30])  # 30: old events fold into totals while filling
def test_store_events_give_exactly_the_features_of_the_whole_past(manifest, tmp_path, recent_days):
    history = fitted(manifest)
    cut = manifest["declared_at"].iloc[4_500]
    past, current = manifest[manifest["declared_at"] < cut], manifest[manifest["declared_at"] >= cut]
    store = HistoryStore(tmp_path, recent_days=recent_days)
    for batch in np.array_split(past.index, 3):  # three earlier batches, as three scoring runs
        store.append(past.loc[batch])
    expected = _features(history, current, past)
    if recent_days == 30:  # the batch is read through the totals: dated a label delay after the checkpoint
        assert store.checkpoint + pd.Timedelta(days=30) <= current["declared_at"].min()
    else:
        assert store.checkpoint is None
    pd.testing.assert_frame_equal(_features(history, current, store), expected)
    # Scoring the same lines again after they were stored: their stored copies do not count (with
    # recent_days=30 the checkpoint is now inside them: old events are read event by event).
    store.append(current)
    pd.testing.assert_frame_equal(_features(history, current, store), expected)
    # A file scored in parts: the store plus the file's other lines.
    halves = np.array_split(current.index, 2)
    file_history = FileHistory(store, tmp_path / "file")
    for half in halves:
        file_history.add(current.loc[half])
    by_part = pd.concat([_features(history, current.loc[h], file_history) for h in halves], ignore_index=True)
    pd.testing.assert_frame_equal(by_part, expected)


def test_a_batch_reads_only_the_events_of_its_parties_and_flows(manifest, tmp_path):
    store = HistoryStore(tmp_path)
    store.append(manifest.iloc[:5_000])
    batch = manifest.iloc[5_000:5_010]
    events = store.events_for(batch, flow_days=210)
    assert set(events.parties["key"]) <= set(batch[["shipper_id", "consignee_id", "importer_id", "declarant_id"]].stack())
    stored = manifest.iloc[:5_000]
    for entity, got in events.parties.groupby("entity", observed=True):
        # Exactly the stored lines of the batch's parties, summed per party and day.
        assert got["lines"].sum() == stored[entity].isin(set(batch[entity].dropna())).sum()
        assert not got.duplicated(["key", "day"]).any()
    assert events.coverage_start == (manifest["declared_at"].min() - pd.Timestamp("1970-01-01")).days
    assert events.flows["day"].min() >= (batch["declared_at"].min() - pd.Timestamp("1970-01-01")).days - 210


def _line(key: str, day: int, inspected: float, misdeclared: float, hs: str = "811010") -> dict:
    return {
        "declaration_id": key,
        "line_no": 1.0,
        "declared_at": pd.Timestamp("2025-01-01") + pd.Timedelta(days=day),
        "hs_code": hs,
        "origin_country": "TH",
        "export_country": "TH",
        "port_of_loading": "THBKK",
        "port_of_discharge": "USLAX",
        "transshipment_ports": None,
        "shipper_id": "S1",
        "consignee_id": "C1",
        "importer_id": "I1",
        "declarant_id": "D1",
        "inspected": inspected,
        "misdeclared": misdeclared,
    }


def _frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_a_labelled_copy_supersedes_an_unlabelled_one_in_either_order(tmp_path):
    labelled, unlabelled = _line("A", 0, 1.0, 1.0), _line("A", 0, np.nan, np.nan)
    first = HistoryStore(tmp_path / "first")
    first.append(_frame(labelled))
    assert first.append(_frame(unlabelled)) == 0  # re-scoring an unlabelled copy erases nothing
    later = HistoryStore(tmp_path / "later")
    later.append(_frame(unlabelled))
    assert later.append(_frame(labelled)) == 1
    for store in (first, later):
        stored = store.read()
        assert len(stored) == 1 and (stored.loc[0, "inspected"], stored.loc[0, "misdeclared"]) == (1.0, 1.0)
        events = store.events_for(_frame(_line("B", 60, np.nan, np.nan)), exclude=_frame(_line("B", 60, 0, 0)))
        shipper = events.parties[events.parties["entity"] == "shipper_id"]
        assert shipper[["lines", "outcomes", "positives"]].sum().tolist() == [1, 1, 1]


def test_a_store_removed_while_its_object_lives_is_written_anew(tmp_path, monkeypatch):
    """A store object prepares its database once; a database removed and created again is prepared
    again, not written without its tables, even when the new file gets the old one's inode (which
    the file system may give it: every file here gets the same identity)."""
    monkeypatch.setattr(history_store, "_file_identity", lambda path: (0, 0))
    store = HistoryStore(tmp_path / "history")
    assert store.append(_frame(_line("A", 0, 0.0, 0.0))) == 1
    shutil.rmtree(store.directory)

    assert store.append(_frame(_line("B", 3, np.nan, np.nan))) == 1

    assert store.read()["declaration_id"].tolist() == ["B"]
    assert store.append(_frame(_line("B", 3, np.nan, np.nan))) == 0  # its key filter was rebuilt too


def test_the_same_file_stored_twice_is_counted_once(tmp_path):
    store = HistoryStore(tmp_path)
    lines = _frame(_line("A", 0, 0.0, 0.0), _line("B", 3, np.nan, np.nan))
    assert store.append(lines) == 2
    assert store.append(lines) == 0
    assert len(store) == 2


def test_a_corrected_copy_replaces_the_stored_one_and_its_events(tmp_path):
    store = HistoryStore(tmp_path)
    store.append(_frame(_line("A", 0, np.nan, np.nan, hs="790111")))
    store.append(_frame(_line("A", 0, np.nan, np.nan, hs="811010")))
    history = fitted(history_frame(_frame(_line("A", 0, 1.0, 0.0))))
    later = _frame(_line("B", 10, np.nan, np.nan, hs="740311"))
    features = history.transform(later, past=store)
    assert features.loc[0, "shipper_id_distinct_hs_before"] == 1
    assert store.read()["hs_code"].tolist() == ["811010"]


def test_an_outcome_stored_later_reaches_the_features_after_the_label_delay(tmp_path):
    store = HistoryStore(tmp_path)
    store.append(_frame(_line("A", 0, np.nan, np.nan), _line("B", 1, np.nan, np.nan)))
    assert store.append(_frame(_line("A", 0, 1.0, 1.0))) == 1  # the outcome, as triage stores it
    history = fitted(history_frame(_frame(_line("A", 0, 1.0, 1.0), _line("C", 1, 1.0, 0.0))))
    soon, after = _frame(_line("S", 20, np.nan, np.nan)), _frame(_line("T", 40, np.nan, np.nan))
    assert history.transform(soon, past=store).loc[0, "shipper_id_outcomes_known"] == 0
    assert history.transform(after, past=store).loc[0, "shipper_id_outcomes_known"] == 1
    assert store.read().set_index("declaration_id").loc["A", "misdeclared"] == 1.0


def test_a_store_of_parquet_parts_is_imported_once_and_its_parts_kept(tmp_path):
    lines = history_frame(_frame(_line("A", 0, 1.0, 0.0), _line("B", 2, np.nan, np.nan)))
    lines.iloc[:1].to_parquet(tmp_path / "part-0001-a.parquet", index=False)
    lines.to_parquet(tmp_path / "part-0002-b.parquet", index=False)
    store = HistoryStore(tmp_path)
    assert len(store) == 2
    assert sorted(p.name for p in (tmp_path / "imported-parts").iterdir()) == ["part-0001-a.parquet", "part-0002-b.parquet"]
    assert len(HistoryStore(tmp_path)) == 2


ROWS = st.lists(
    st.tuples(
        st.sampled_from("ABCDEFGH"),
        st.integers(0, 90),
        st.sampled_from(["S1", "S2"]),
        st.sampled_from(["790111", "811010"]),
        st.sampled_from(["", "0", "1"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ROWS, min_size=1, max_size=4), st.integers(0, 160), st.sampled_from([365, 10]))
def test_property_any_sequence_of_batches_gives_the_features_of_the_winning_copies(
    tmp_path_factory, batches, query_day, recent_days
):
    """Batches with repeated, corrected and (un)labelled copies, checkpoints moving (``recent_days``
    10) and lines scored before, around and after them: the store equals its lines' past."""
    store = HistoryStore(tmp_path_factory.mktemp("store"), recent_days=recent_days)
    stored = []
    for rows in batches:
        frame = _frame(
            *[
                {
                    **_line(key, day, np.nan if label == "" else 1.0, np.nan if label == "" else float(label), hs=hs),
                    "shipper_id": shipper,
                }
                for key, day, shipper, hs, label in rows
            ]
        )
        store.append(frame)
        stored.append(history_frame(frame))
    # What the store must hold: per line, the last labelled copy, else the last copy.
    everything = winning_copies(pd.concat(stored, ignore_index=True))
    assert sorted(line_keys(store.read())) == sorted(line_keys(everything))
    history = fitted(everything)
    # Two new lines, and a corrected copy of a stored line (another code, day and shipper).
    query = _frame(
        _line("Q", query_day, np.nan, np.nan),
        {**_line("R", query_day, np.nan, np.nan), "shipper_id": "S2"},
        {**_line("A", query_day, np.nan, np.nan, hs="740311"), "shipper_id": "S2"},
    )
    pd.testing.assert_frame_equal(_features(history, query, store), _features(history, query, everything))
    assert list(store.read().columns) == list(HISTORY_COLUMNS)


def test_the_key_filter_never_misses_a_stored_line_and_is_rebuilt_when_lost(manifest, tmp_path):
    store = HistoryStore(tmp_path)
    store.append(manifest.iloc[:3_000])
    fresh = manifest.iloc[3_000:].assign(declaration_id=lambda f: "NEW-" + f["declaration_id"])
    with duckdb.connect(str(store.path)) as connection:
        bits, count = store.key_filter.load(connection)
        assert count == 3_000
        assert store.key_filter.may_hold(bits, manifest.iloc[:3_000]).all()
        # About 20 bits a key after the first batch: none of 3,000 new keys is a false positive (deterministic).
        assert store.key_filter.may_hold(bits, fresh).sum() == 0
    store.key_filter.path.unlink()
    assert store.append(manifest.iloc[:3_000]) == 0  # copies still found: the filter is rebuilt
    assert len(store) == 3_000 and store.key_filter.path.exists()


def test_the_key_filter_rebuilt_in_slices_sets_the_bits_of_one_rebuild(manifest, tmp_path):
    """Rebuilding reads the stored keys a slice at a time (bounded memory): the same filter."""
    store = HistoryStore(tmp_path / "store")
    store.append(manifest.iloc[:3_000])
    with duckdb.connect(str(store.path)) as connection:
        whole = KeyFilter(tmp_path / "whole.npz", rebuild_rows=10_000).load(connection)
        sliced = KeyFilter(tmp_path / "sliced.npz", rebuild_rows=7).load(connection)
        fresh = manifest.iloc[3_000:3_500].assign(declaration_id=lambda f: "NEW-" + f["declaration_id"])
        grown = KeyFilter(tmp_path / "grown.npz", rebuild_rows=7)
        grown.add(connection, np.zeros(8, dtype="uint8"), 0, fresh)  # past its capacity: rebuilt from the table
        with np.load(grown.path) as saved:
            grown_bits, grown_keys = saved["bits"], int(saved["keys"])
    assert whole[1] == sliced[1] == 3_000
    np.testing.assert_array_equal(sliced[0], whole[0])
    assert KeyFilter(tmp_path / "x.npz").may_hold(whole[0], manifest.iloc[:3_000]).all()
    # As the rebuild read every key at once: a filter for 3,500 keys, holding the stored and the new ones.
    at_once = KeyFilter(tmp_path / "at-once.npz")
    keys = pd.concat([manifest.iloc[:3_000], fresh])[["declaration_id", "line_no"]]
    assert grown_keys == 500
    np.testing.assert_array_equal(grown_bits, at_once._set(at_once._empty(3_500), KeyFilter.hashes_of(keys)))


@pytest.mark.parametrize("rows", [0, -1])
def test_the_key_filter_refuses_a_rebuild_slice_of_no_rows(tmp_path, rows):
    with pytest.raises(ValueError, match=f"rebuild_rows must be >= 1, got {rows}"):
        KeyFilter(tmp_path / "f.npz", rebuild_rows=rows)


FILE_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C", "D", "X1", "X2", "X3"]),
        st.integers(0, 160),
        st.sampled_from(["S1", "S2"]),
        st.sampled_from(["790111", "811010"]),
        st.sampled_from(["", "0", "1"]),
    ),
    min_size=1,
    max_size=10,
    unique_by=lambda row: row[0],
)


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ROWS, min_size=1, max_size=3), FILE_ROWS, st.sampled_from([365, 10]))
def test_property_a_file_scored_in_parts_sees_the_store_without_its_copies_and_its_other_lines(
    tmp_path_factory, batches, file_rows, recent_days
):
    """A file whose lines the store may hold already (identical, corrected, (un)labelled), scored in
    two parts through :class:`FileHistory`: exactly the features of the store's other lines plus the
    file's lines, whatever the part."""
    note(f"batches={batches!r} file_rows={file_rows!r} recent_days={recent_days}")
    store = HistoryStore(tmp_path_factory.mktemp("store"), recent_days=recent_days)
    for rows in batches:
        store.append(
            _frame(
                *[
                    {
                        **_line(key, day, np.nan if label == "" else 1.0, np.nan if label == "" else float(label), hs=hs),
                        "shipper_id": shipper,
                    }
                    for key, day, shipper, hs, label in rows
                ]
            )
        )
    file = history_frame(
        _frame(
            *[
                {
                    **_line(key, day, np.nan if label == "" else 1.0, np.nan if label == "" else float(label), hs=hs),
                    "shipper_id": shipper,
                }
                for key, day, shipper, hs, label in file_rows
            ]
        )
    )
    stored = store.read()
    past = pd.concat([stored[~line_keys(stored).isin(line_keys(file))], file], ignore_index=True)
    history = fitted(past)
    file_history = FileHistory(store, tmp_path_factory.mktemp("file"))
    parts = np.array_split(np.arange(len(file)), 2)
    for part in parts:
        file_history.add(file.iloc[part])
    # The history began with the first line the store has held, even one the file corrects to a
    # later day (as for a batch scored against the store alone).
    start = (pd.concat([stored["declared_at"], file["declared_at"]]).min() - pd.Timestamp("1970-01-01")).days
    for part in parts:
        lines = file.iloc[part].reset_index(drop=True)
        if len(lines):
            others = past[~line_keys(past).isin(line_keys(lines))]
            expected = replace(PastEvents.from_lines(others), coverage_start=start)
            pd.testing.assert_frame_equal(_features(history, lines, file_history), _features(history, lines, expected))


def test_a_party_whose_first_line_is_corrected_away_keeps_its_true_first_day_behind_the_checkpoint(tmp_path):
    """Shipper S1's first stored line (A, day 70) comes back in a file corrected to shipper S2; the
    store has folded day 70 into per-party totals. S1's first day is then its other line's (day 80):
    the totals, which would put it at the checkpoint, are not read."""
    other = [{**_line(f"O{day}", day, np.nan, np.nan), "shipper_id": "S9"} for day in range(0, 201, 5)]
    store = HistoryStore(tmp_path / "store", recent_days=10)
    store.append(_frame(*other, _line("A", 70, np.nan, np.nan), _line("B", 80, np.nan, np.nan)))
    assert store.checkpoint is not None and store.checkpoint > pd.Timestamp("2025-01-01") + pd.Timedelta(days=80)
    file = history_frame(_frame({**_line("A", 70, np.nan, np.nan), "shipper_id": "S2"}, _line("N", 260, np.nan, np.nan)))
    file_history = FileHistory(store, tmp_path / "file")
    file_history.add(file)
    history = fitted(history_frame(_frame(_line("A", 0, 1.0, 0.0))))
    features = history.transform(file.iloc[[1]].reset_index(drop=True), past=file_history)
    assert features.loc[0, "shipper_id_days_since_first"] == 260 - 80
    assert features.loc[0, "shipper_id_lines_before"] == 1


def test_a_part_of_a_file_in_date_order_reads_its_parties_earlier_days_folded(tmp_path):
    """Shipper S1 declares every day for 200 days; the part of days 100-199 reads S1's days before
    70 (100 minus the 30-day label delay) as a first day and one total, the later days one by one
    up to day 198 (day 199, the part's last, counts for none of its lines)."""
    file = history_frame(_frame(*[_line(f"L{day}", day, np.nan, np.nan) for day in range(200)]))
    file_history = FileHistory(None, tmp_path)
    file_history.add(file.iloc[:100])
    file_history.add(file.iloc[100:])
    events = file_history.events_for(file.iloc[100:], flow_days=0, label_delay_days=30)
    shipper = events.parties[(events.parties["entity"] == "shipper_id").to_numpy()]
    start = (pd.Timestamp("2025-01-01") - pd.Timestamp("1970-01-01")).days
    added = shipper[shipper["lines"] > 0].sort_values("day")
    assert added["day"].tolist() == [start] + [start + d for d in range(69, 199)]
    assert added["lines"].tolist() == [1, 69] + [1] * 129
    assert shipper["lines"].sum() == 99  # 199 days read, the part's own 100 lines taken out


def test_summed_events_net_per_key_and_day_and_keep_first_uses():
    def events(parties: list[tuple], values: list[tuple]) -> PastEvents:
        party_frame = pd.DataFrame(parties, columns=["entity", "key", "day", "lines", "outcomes", "positives"])
        value_frame = pd.DataFrame(values, columns=["entity", "key", "kind", "value", "day", "lines"])
        for frame in (party_frame, value_frame):
            for column in ("entity", "key", "kind", "value"):
                if column in frame:
                    frame[column] = frame[column].astype("category")
        flows = pd.DataFrame({"flow": pd.Categorical(["TH|7901|USLAX"] * 3), "day": [5, 5, 6], "lines": [1, -1, 2]})
        return PastEvents(party_frame, value_frame, flows, 0)

    parties = [
        ("shipper_id", "S1", 5, 1, 1, 0),
        ("shipper_id", "S2", 5, 1, 0, 0),
        ("shipper_id", "S1", 5, 1, 1, 1),
        ("shipper_id", "S2", 5, -1, 0, 0),  # S2's only line taken out: no row
        ("shipper_id", None, 5, 1, 0, 0),  # no party: no row
        ("consignee_id", "S1", 7, 1, 0, 0),
    ]
    values = [
        ("shipper_id", "S1", "hs6", "790111", 9, 1),
        ("shipper_id", "S1", "hs6", "790111", 4, 1),
        ("shipper_id", "S1", "hs6", "790111", 2, -1),  # a copy taken out is no first use
        ("shipper_id", "S1", "route", "TH>US", 3, 1),
    ]

    total = history_store.summed(events(parties, values))

    assert total.parties.astype({"entity": str, "key": str}).values.tolist() == [
        ["shipper_id", "S1", 5, 2, 2, 1],
        ["consignee_id", "S1", 7, 1, 0, 0],
    ]
    assert total.values.astype({c: str for c in ("entity", "key", "kind", "value")}).values.tolist() == [
        ["shipper_id", "S1", "hs6", "790111", 4, 1],
        ["shipper_id", "S1", "route", "TH>US", 3, 1],
    ]
    assert total.flows.astype({"flow": str}).values.tolist() == [["TH|7901|USLAX", 6, 2]]


def test_a_store_with_one_duckdb_thread_gives_the_same_events_and_refuses_zero(tmp_path, manifest):
    lines, later = manifest.iloc[:2_000], manifest.iloc[2_000:2_100]
    default, single = HistoryStore(tmp_path / "default"), HistoryStore(tmp_path / "single", threads=1)
    for store in (default, single):
        store.append(lines)

    expected, got = default.events_for(later), single.events_for(later)

    def rows(frame: pd.DataFrame) -> list[tuple]:  # a group-by's row order depends on its threads
        return sorted(frame.astype(object).itertuples(index=False, name=None), key=repr)

    for name in ("parties", "values", "flows"):
        assert rows(getattr(got, name)) == rows(getattr(expected, name))
        assert len(getattr(got, name)) > 0
    with pytest.raises(ValueError, match="threads must be >= 1 or None, got 0"):
        HistoryStore(tmp_path / "zero", threads=0)


def _held_by_another_process(path, read_only: bool) -> subprocess.Popen:
    """A process holding ``path`` open (DuckDB's file lock: shared when read-only) until killed."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); "
            "print('open', flush=True); time.sleep(120)",
            str(path),
            "ro" if read_only else "rw",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    return holder


def test_reads_share_the_database_with_other_readers_and_a_write_waits_for_them(tmp_path, manifest):
    lines, later = manifest.iloc[:1_000], manifest.iloc[1_000:1_100]
    HistoryStore(tmp_path).append(lines)
    store = HistoryStore(tmp_path, lock_timeout=0.3)
    expected = store.events_for(later)

    reader = _held_by_another_process(store.path, read_only=True)
    try:
        assert len(store) == 1_000  # read while another process reads
        pd.testing.assert_frame_equal(store.events_for(later).parties, expected.parties)
        with pytest.raises(duckdb.IOException, match="lock"):
            store.append(later)  # a write waits for the reader (here longer than lock_timeout)
    finally:
        reader.kill()
        reader.wait()
    writer = _held_by_another_process(store.path, read_only=False)
    try:
        with pytest.raises(duckdb.IOException, match="lock"):
            len(store)  # a read waits for a writer
    finally:
        writer.kill()
        writer.wait()
    assert store.append(later) == 100 and len(store) == 1_100


def test_a_database_file_left_empty_by_a_cut_creation_reads_as_no_store(tmp_path, manifest):
    store = HistoryStore(tmp_path)
    store.path.touch()
    assert len(store) == 0 and store.events_for(manifest.iloc[:10]).parties.empty


def test_the_checkpoint_moves_events_in_slices_to_the_same_tables(manifest, tmp_path, monkeypatch):
    """Events move to the old tables in slices of whole days, each committed with the checkpoint it
    reaches (a single move of a big store's year ran out of DuckDB's memory): the tables end as
    one move leaves them, and a small slice size did cut the move."""
    past = manifest[manifest["declared_at"] < manifest["declared_at"].iloc[4_500]]

    def filled(directory):
        store = HistoryStore(directory, recent_days=30)
        for batch in np.array_split(past.index, 3):
            store.append(past.loc[batch])
        return store

    def tables(store):
        names = ["party_events", "party_events_old", "party_totals_old", "flow_events", "flow_events_old", "checkpoint"]
        with duckdb.connect(str(store.path), read_only=True) as connection:
            return {name: connection.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in names}

    whole = tables(filled(tmp_path / "whole"))
    slices, slice_ends = [], history_store._slice_ends
    monkeypatch.setattr(history_store, "CHECKPOINT_SLICE_ROWS", 300)
    monkeypatch.setattr(history_store, "_slice_ends", lambda *args: slices.append(slice_ends(*args)) or slices[-1])
    sliced = tables(filled(tmp_path / "sliced"))
    assert slices and max(len(ends) for ends in slices) > 1
    assert whole["party_events_old"] and sliced == whole

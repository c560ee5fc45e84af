"""Publishing fold outputs as DuckLake snapshots: `SnapshotWriter`, and the numbered commit order of a publish.

`SnapshotWriter`s (the flow's sink partitions, see `adapters.snapshot_store.sink`) publish
what the fold emitted; any number of `SnapshotReader`s, in any process, read committed
snapshots. The tables are declared in `adapters.snapshot_store.tables` (reference:
docs/snapshot-tables.md).

Several writers on one catalog (`writers` > 1, a flow scaled out: each writer owns the
(site, sku) keys the flow routes to it). Measured with DuckDB 1.5.5 / DuckLake 1.0, two
processes MERGE-ing disjoint keys into one table: on PostgreSQL 8 of 40 commits failed
"Transaction conflict - attempting to insert into table ... but another transaction has
deleted from it" (DuckLake checks inserts against deletes per table, not per key, and
does not retry a logical conflict); on SQLite 3 of 40 failed "database is locked" (no
busy timeout, no retry). So each writer has its own tables (`positions_w0`,
`positions_w1`, ...) and the public names are DuckLake views over their UNION ALL,
created with them: readers query `positions`, `AT (VERSION => n)` included (a view read
at a version reads its tables at that version). Writers only ever insert into the one
shared table, `snapshot_log`. With per-writer tables, two writers on PostgreSQL committed
40 of 40 each (DuckLake retries the race for the next snapshot id itself); on SQLite they
still failed "database is locked" unless each whole transaction (BEGIN to COMMIT) takes
its turn on DIR/.commit.lock. On PostgreSQL they take turns too: a commit landing inside
another writer's transaction made DuckLake date that transaction's deletes one snapshot
early (`connection.commit_turn`). So the writers stage and coalesce in parallel and write
one at a time, on hosts that share DIR. A PostgreSQL catalog is the one for a cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

import duckdb

from adapters.snapshot_store.coalesce import TERMINAL, highest_ranks, latest_offers, latest_versions, winning_decisions
from adapters.snapshot_store.connection import (
    COMMIT_ATTEMPTS,
    Closing,
    attach,
    commit_turn,
    connect,
    dicts,
    from_millis,
    is_transient,
    lost_creation_race,
    millis_to_datetime,
    pause,
    rollback,
    scalar,
    set_wal,
    taking_turns,
)
from adapters.snapshot_store.layout import (
    CATALOG_FILE,
    DATA_DIR,
    LAKE,
    LOCK_FILE,
    SNAPSHOT_LOG,
    StoreLayout,
    heartbeat_file,
)
from adapters.snapshot_store.maintenance import MaintenanceReport, maintain
from adapters.snapshot_store.recent import FoldReport, commit_fold, drop_staged, read_recent
from adapters.snapshot_store.staging import merge, stage, stage_columns
from adapters.snapshot_store.stored_versions import StoredVersions, Verdicts
from adapters.snapshot_store.tables import (
    INBOUND,
    SNAPSHOT_INFO,
    SNAPSHOT_LOG_TABLE,
    TABLES,
    PublishRecord,
    SiteLine,
    create_missing,
)
from ledger.errors import SnapshotError
from ledger.events import Millis
from ledger.execution import Work
from ledger.outputs import PositionChange, ReservationDecision

__all__ = ["RECENT_LIMIT", "SnapshotWriter"]

_TERMINAL_SQL = ", ".join(f"'{s}'" for s in TERMINAL)

RECENT_LIMIT = 1_000_000
"""Rows in a writer's recent table past which a publish starts folding it into the base (`compact_recent`).

Every read of `positions` joins the recent rows against the base and ranks them per key,
so the bound is what a read pays on top; a fold costs about one whole-table join (its
read, beside the publishes) and a rewrite of the base's delete files (its commit, which
the next publish waits for), so the bound also sets how many publishes share one (ten of
100,000 changes; see docs/snapshots.md for the figures).
"""


@dataclass(frozen=True, slots=True)
class _Staged:
    """Which temp tables a publish staged (step 2), for the commit steps."""

    positions: bool
    """Accepted positions the table holds (stage_positions), to MERGE."""
    new_positions: bool
    """Accepted positions it does not hold yet (stage_new_positions), to INSERT."""
    inbound: bool
    offers: bool
    reservations: bool
    tasks: bool
    loads: bool
    orders: bool


# ----------------------------------------------------------------------------- writer


class SnapshotWriter(Closing):
    """A writer: publishes fold outputs as DuckLake snapshots.

    Open it with `SnapshotWriter.open(directory)`: one writer per store. With
    `writers=N`, N writers (indexes 0..N-1, in this or other processes) share the store,
    each writing its own tables; a second writer with the same index is refused (its
    commits would race for the same rows).
    """

    def __init__(
        self,
        directory: Path,
        con: duckdb.DuckDBPyConnection,
        lock: IO[bytes],
        layout: StoreLayout | None = None,
        writer: int = 0,
        recent_limit: int | None = None,
        *,
        fold_in_background: bool = True,
    ) -> None:
        """Use `SnapshotWriter.open`."""
        self._dir = directory
        self._con = con
        self._lock = lock
        self._layout = layout or StoreLayout()
        self._index = writer
        self._names = {name: self._layout.table(name, writer) for name in TABLES}
        self._base = self._layout.positions_base(writer)
        self._recent = self._layout.positions_recent(writer)
        self._recent_limit = recent_limit
        self._last_info = self._read_last_info()
        # Rows in the recent table (every accepted version since the last compaction),
        # kept up to date with this writer's own commits: it is the only one writing it.
        self._recent_rows = scalar(con, f"SELECT count(*) FROM {LAKE}.{self._recent}")
        self._fold_in_background = fold_in_background
        # Taken by a publish from its BEGIN to the bookkeeping after its COMMIT, and by a
        # fold's commit (phase 2, `adapters.snapshot_store.recent`): no two lake write
        # transactions may overlap (SQLite refuses them; DuckLake dates deletes from the
        # snapshot a transaction began at), and one writer predicts its snapshot id at
        # BEGIN (step 3), which another commit in between would make wrong.
        self._commit_lock = threading.Lock()
        self._fold_thread: threading.Thread | None = None
        self._fold_failure: BaseException | None = None
        self._fold_con: duckdb.DuckDBPyConnection | None = None
        self._folds: list[FoldReport] = []
        self.compaction_seconds = 0.0
        """Wall seconds the last `publish` spent on folds: waiting for a background fold's commit, or folding inline."""
        # Read at the first publish with positions (on the sink's writer thread, not at
        # open), dropped whenever a commit fails: see `_stored_versions`.
        self._versions: StoredVersions | None = None
        # The snapshot as of which the kept versions are right: this writer's last commit
        # or maintenance, or the newest when they were read.
        self._seen = 0

    # -- lifecycle

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        catalog: str = "",
        writers: int = 1,
        writer: int = 0,
        recent_limit: int | None = RECENT_LIMIT,
        fold_in_background: bool = True,
    ) -> SnapshotWriter:
        """Open the store at `directory` as writer `writer` of `writers`, creating whatever is missing (idempotent).

        `catalog`: "" for SQLite at DIR/catalog.sqlite, "postgres:<libpq conninfo>" for
        PostgreSQL. A store keeps the catalog and writer count it was created with
        (DIR/store.json): opening it with others is refused. A store of layout 1 (each
        writer's positions one table) is migrated to layout 2 in one snapshot.
        `recent_limit`: a publish that leaves at least this many rows in the recent table
        then folds it into the base (`compact_recent`); None: only when called.
        `fold_in_background`: that fold runs on a thread of its own while the publishes
        go on (they wait only for its short commit); False: on the publishing thread.
        """
        directory = Path(directory).resolve()
        layout = StoreLayout(catalog, writers)
        if not 0 <= writer < writers:
            msg = f"writer index {writer} is out of range for {writers} writer(s) (0..{writers - 1})"
            raise SnapshotError(msg)
        try:
            (directory / DATA_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the snapshot store directory {directory}: {exc}"
            raise SnapshotError(msg) from exc
        existing = StoreLayout.of(directory)
        deadline = time.monotonic() + 15
        while existing is not None and existing != layout and existing.default and time.monotonic() < deadline:
            # Another writer of this layout may be creating the store right now: its catalog
            # file appears before its manifest (the manifest comes last, for readers).
            time.sleep(0.1)
            existing = StoreLayout.of(directory)
        if existing is not None and existing != layout:
            msg = (
                f"the snapshot store {directory} was created with the catalog {existing.described()} and "
                f"{existing.writers} writer(s); it cannot be opened with {layout.described()} and "
                f"{layout.writers} writer(s) (keys would move between writers' tables): use the same "
                "settings, or start over with --reset"
            )
            raise SnapshotError(msg)
        lock = cls._take_lock(directory, layout, writer)
        con: duckdb.DuckDBPyConnection | None = None
        try:
            # Extensions first: a reader that sees the catalog file can then load them.
            con = connect(directory, layout)
            if not layout.postgres:
                with commit_turn(directory, layout):
                    set_wal(directory / CATALOG_FILE)
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    with commit_turn(directory, layout):
                        attach(con, directory, layout, read_only=False)
                    break
                except SnapshotError as exc:
                    # Several writers attaching a new PostgreSQL catalog at once race to
                    # create DuckLake's own tables ("duplicate key", or "relation ... already
                    # exists": seen in CI); the loser attaches what the winner made.
                    if attempt + 1 < COMMIT_ATTEMPTS and lost_creation_race(exc):
                        pause(attempt)
                        continue
                    raise
            cls._create_tables(con, directory, layout)
            # Last: a reader that finds the manifest finds the tables.
            layout.save(directory)
            return cls(directory, con, lock, layout, writer, recent_limit, fold_in_background=fold_in_background)
        except BaseException:
            if con is not None:
                con.close()
            lock.close()
            raise

    @staticmethod
    def _take_lock(directory: Path, layout: StoreLayout, writer: int) -> IO[bytes]:
        path = directory / (f".writer-{writer}.lock" if layout.sharded else LOCK_FILE)
        lock = path.open("ab")
        try:
            # Released by the OS when the process dies, so a crash never leaves it stale.
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            who = f"writer {writer}" if layout.sharded else "a SnapshotWriter"
            msg = (
                f"another process has {who} of the snapshot store {directory} open "
                f"({path} is locked): each writer index takes one writer; stop the other one"
            )
            raise SnapshotError(msg) from exc
        return lock

    @staticmethod
    def _create_tables(con: duckdb.DuckDBPyConnection, directory: Path, layout: StoreLayout) -> None:
        """Create the missing tables (and views) and add the missing columns, in one snapshot.

        A store written by an earlier version lacks what was added since; nothing is
        dropped or retyped, so its readers keep working. Several writers opening a new
        store at once race to create it: the loser finds the tables on its next attempt.
        """
        try:
            # "already exists" counts as a lost race: another writer created a table between
            # this writer's look at the catalog and its CREATE (seen on PostgreSQL in CI);
            # the next attempt looks again and finds it.
            taking_turns(con, directory, layout, lambda: create_missing(con, layout), lost_creation_race)
        except duckdb.Error as exc:
            msg = f"cannot create or upgrade the snapshot store tables: {exc}"
            raise SnapshotError(msg) from exc

    def use_one_thread(self) -> None:
        """Run this writer's queries on the calling thread only (DuckDB's `threads`, per database)."""
        try:
            self._con.execute("SET threads = 1")
        except duckdb.Error as exc:
            msg = f"cannot set the snapshot writer's DuckDB threads at {self._dir}: {exc}"
            raise SnapshotError(msg) from exc

    def close(self) -> None:
        """Wait for a fold under way, close the connections and release the writer lock.

        Raises the failure of a background fold that no publish has reported yet.
        """
        try:
            if self._fold_thread is not None:
                self._fold_thread.join()
            if self._fold_con is not None:
                self._fold_con.close()
            self._con.close()
        finally:
            self._lock.close()
        self._raise_fold_failure()

    # -- publishing

    def publish(
        self,
        changes: Sequence[PositionChange],
        decisions: Sequence[ReservationDecision],
        work: Sequence[Work] = (),
        *,
        events_applied: int,
        now: Millis,
    ) -> int | None:
        """Write one DuckLake snapshot holding `changes`, `decisions` and `work`; return its id.

        Returns None, writing nothing, when all three are empty. Safe to call again with
        what was already published (at-least-once delivery): an older position version
        changes nothing, nor does work of a rank already stored. `events_applied` is the
        caller's running total.

        Commit order (one transaction, so readers see all of it or none of it):

        1. Coalesce in memory: the highest version per (site, sku), the newest offer per
           (seller, sku), the winning decision per reservation, the highest rank per
           piece of work (equal ranks: the later one).
        2. Pick the accepted positions: new keys, or a version at least the stored one,
           from the versions this writer keeps in memory (`StoredVersions`: it is the
           only writer of its tables; read from the lake once, then kept up to date with
           its own commits), which also says which keys are new. Stage the accepted
           rows in temp tables (numpy columns or one JSON parameter per table: cost
           grows with the change, not with the store).
        3. BEGIN (with several writers, after taking the commit turn); one
           writer alone reads the current snapshot id: this commit will create id + 1.
        4. (Was the accepted-versions join against the lake; now step 2.)
        5. Replace the inbound lines of the accepted keys (before 6).
        6. INSERT the accepted positions into this writer's recent table, `new_key` on
           the keys it had not stored (the view `positions` takes the newest per key;
           nothing of the positions is read).
        7. MERGE offers (newer updated_at wins), reservations (last decision wins
           unless the stored one is terminal and newer) and work (store tasks, transport
           loads, dropship orders: a higher rank replaces, new keys are inserted; statuses
           only move forward, so a replayed or redelivered record changes nothing).
        8. INSERT the snapshot_info row (id, events_applied, max_occurred_at); several
           writers: the snapshot_log row (writer, events_applied, max_occurred_at), whose
           id DuckLake records as it commits.
        9. COMMIT, then check DuckLake created the id written in 8; only now may the
           caller advance its input position, and only now do the kept versions take
           the accepted ones. Any failure drops the kept versions: the next publish
           reads them from the lake again.
        10. With `recent_limit` rows or more in the recent table, start folding it into
           the base (`adapters.snapshot_store.recent`: a read beside the publishes, then
           a snapshot of its own that changes no position; a later publish waits for that
           commit only). A publish first raises a background fold's failure.

        A commit that lost a race with another writer (a conflict, a locked SQLite
        catalog) is rolled back and steps 3-9 run again with the staged rows, up to
        `COMMIT_ATTEMPTS` times; a conflict is only a lost race here, never a
        contradiction, because no two writers own the same rows.
        """
        self._raise_fold_failure()
        self.compaction_seconds = 0.0
        if not changes and not decisions and not work:
            return None
        # 1. Coalesce.
        positions = latest_versions(changes)
        offers = latest_offers(changes)
        reservations = winning_decisions(decisions)
        tasks, loads, orders = highest_ranks(work)
        max_occurred = max((c.max_occurred_at for c in changes), default=None)
        previous = self._last_info.get("max_occurred_at_ms")
        if isinstance(previous, int) and (max_occurred is None or previous > max_occurred):
            max_occurred = previous
        con = self._con
        verdicts: Verdicts | None = None
        stored: list[PositionChange] = []
        new: list[PositionChange] = []
        if positions:
            # 2. Accepted positions, split into stored and new keys.
            verdicts = self._stored_versions().judge(positions)
            for position, accepted, fresh in zip(
                positions, verdicts.accepted.tolist(), verdicts.new.tolist(), strict=True
            ):
                if accepted:
                    (new if fresh else stored).append(position)
        try:
            # 2. Stage (temp tables are local to this connection, outside the lake);
            # an empty one is skipped with its statement: each costs ~3 ms.
            lines = [SiteLine(c.site_id, c.sku, line) for part in (stored, new) for c in part for line in c.inbound]
            if stored:
                stage_columns(con, TABLES["positions"], stored)
            if new:
                stage_columns(con, TABLES["positions"], new, "stage_new_positions")
            if lines:
                stage_columns(con, TABLES["inbound"], lines)
            for name, rows in (
                ("offers", offers),
                ("reservations", reservations),
                ("store_tasks", tasks),
                ("transport_loads", loads),
                ("dropship_orders", orders),
            ):
                if rows:
                    stage(con, TABLES[name], rows)
        except duckdb.Error as exc:
            msg = f"cannot stage a publish to the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        staged = _Staged(
            bool(stored),
            bool(new),
            bool(lines),
            bool(offers),
            bool(reservations),
            bool(tasks),
            bool(loads),
            bool(orders),
        )
        with self._committing():
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    with commit_turn(self._dir, self._layout):
                        snapshot_id, committed = self._commit(staged, events_applied, now, max_occurred)
                    break
                except SnapshotError:
                    rollback(con)
                    self._versions = None
                    raise
                except duckdb.Error as exc:
                    rollback(con)
                    # A transient error is a lost race that committed nothing (the protocol
                    # relies on it already: a retry inserts the snapshot_info row again), so
                    # the kept versions still hold; anything else drops them.
                    if attempt + 1 < COMMIT_ATTEMPTS and is_transient(exc):
                        pause(attempt)
                        continue
                    msg = (
                        f"cannot publish {len(positions)} positions, {len(reservations)} reservation "
                        f"decisions, {len(tasks)} store tasks, {len(loads)} transport loads and "
                        f"{len(orders)} dropship orders to the snapshot store {self._dir}"
                        f"{f' (writer {self._index}, attempt {attempt + 1})' if self._layout.sharded else ''}: {exc}"
                    )
                    self._versions = None
                    raise SnapshotError(msg) from exc
                except BaseException:
                    rollback(con)
                    self._versions = None
                    raise
            self._seen = committed
            if verdicts is not None:
                self._recent_rows += int(verdicts.accepted.sum())
        if snapshot_id is not None and committed != snapshot_id:
            self._versions = None
            msg = (
                f"published DuckLake snapshot {committed} but recorded it as {snapshot_id} in "
                f"snapshot_info at {self._dir}: another process wrote to the catalog; "
                "the store takes one writer (or open it with writers=N, one index each)"
            )
            raise SnapshotError(msg)
        if verdicts is not None and self._versions is not None:
            try:
                self._versions.committed(verdicts)
            except ValueError:
                self._versions = None  # read again at the next publish
        self._last_info = {
            "snapshot_id": committed,
            "created_at": millis_to_datetime(now),
            "events_applied": events_applied,
            "max_occurred_at": None if max_occurred is None else millis_to_datetime(max_occurred),
            "max_occurred_at_ms": max_occurred,
        }
        # 10. Past the bound, fold the recent rows into the base: a snapshot of its own,
        # after this publish's, which readers see as no change at all. In the background
        # the publishes go on, waiting only for the fold's short commit.
        if self._recent_limit is not None and self._recent_rows >= self._recent_limit:
            if self._fold_in_background:
                self._start_fold()
            elif self._fold_thread is None:
                started = time.perf_counter()
                self.compact_recent()
                self.compaction_seconds += time.perf_counter() - started
        return committed

    @property
    def recent_rows(self) -> int:
        """How many rows the recent table holds (every accepted version since the last compaction)."""
        return self._recent_rows

    def compact_recent(self) -> int:
        """Fold the recent positions into the base now, on this thread; return the keys written to the base.

        Waits for a background fold under way first (and raises its failure). Readers see
        the same `positions` before and after, and the change feed our readers follow
        (the recent table's insertions) shows nothing; see `adapters.snapshot_store.recent`
        for the two phases and why.
        """
        self.wait_for_fold()
        report = self._fold(background=False)
        return 0 if report is None else report.keys

    def wait_for_fold(self) -> None:
        """Wait for a background fold under way to end; raise its failure, if any."""
        thread = self._fold_thread
        if thread is not None:
            thread.join()
            self._fold_thread = None
        self._raise_fold_failure()

    def take_folds(self) -> list[FoldReport]:
        """The folds finished since the last call (for logs and metrics), oldest first."""
        with self._commit_lock:
            folds, self._folds = self._folds, []
        return folds

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """The commit lock, for a publish; the time waited for it is what a fold's commit cost the publish."""
        waiting = time.perf_counter()
        with self._commit_lock:
            self.compaction_seconds += time.perf_counter() - waiting
            yield

    def _start_fold(self) -> None:
        if self._fold_thread is not None:
            if self._fold_thread.is_alive():
                return  # one at a time: the next publish past the bound starts the next
            self._fold_thread.join()
        # Started from the writer's thread, it inherits its lower CPU priority (sink.WRITER_NICENESS).
        self._fold_thread = threading.Thread(
            target=self._fold_beside_publishes, name=f"snapshot-fold-{self._index}", daemon=True
        )
        self._fold_thread.start()

    def _fold_beside_publishes(self) -> None:
        try:
            self._fold(background=True)
        except BaseException as exc:  # reported by the next publish, wait_for_fold or close
            self._fold_failure = exc

    def _raise_fold_failure(self) -> None:
        failure, self._fold_failure = self._fold_failure, None
        if failure is None:
            return
        if isinstance(failure, SnapshotError):
            raise failure
        msg = f"folding the recent positions into the base failed at {self._dir}: {failure}"
        raise SnapshotError(msg) from failure

    def _fold(self, *, background: bool) -> FoldReport | None:
        """Phase 1 on the fold's own connection, then phase 2 in the commit lock (and turn); None: nothing to fold."""
        if self._fold_con is None:
            # A second connection to the same database: its own transactions and temp
            # tables, the same attached lake.
            self._fold_con = self._con.cursor()
        cur = self._fold_con
        started = time.perf_counter()
        try:
            try:
                read = read_recent(cur, self._base, self._recent)
            except duckdb.Error as exc:
                msg = f"cannot read the recent positions of the snapshot store {self._dir} to fold them: {exc}"
                raise SnapshotError(msg) from exc
            if read is None:
                return None
            read_done = time.perf_counter()
            with self._commit_lock:
                try:
                    committed = taking_turns(
                        cur, self._dir, self._layout, lambda: commit_fold(cur, self._base, self._recent, read)
                    )
                except duckdb.Error as exc:
                    msg = f"cannot fold the recent positions into the base of the snapshot store {self._dir}: {exc}"
                    raise SnapshotError(msg) from exc
                except BaseException:
                    rollback(cur)
                    raise
                self._recent_rows -= read.rows
                # The same versions in other tables: the kept ones stay right. `_seen`
                # moves only if nobody else committed since this writer's last commit.
                if committed == self._seen + 1:
                    self._seen = committed
                report = FoldReport(
                    committed,
                    read.as_of,
                    read.rows,
                    read.keys,
                    read_done - started,
                    time.perf_counter() - read_done,
                    background,
                )
                self._folds.append(report)
            return report
        finally:
            with contextlib.suppress(duckdb.Error):
                drop_staged(cur)

    def _commit(
        self, staged: _Staged, events_applied: int, now: Millis, max_occurred: Millis | None
    ) -> tuple[int | None, int]:
        """Steps 3-9 of `publish`: (the id predicted in 3, or None with several writers; the id committed)."""
        con = self._con
        names = self._names
        # 3. Begin; predict the snapshot id (one writer: nobody else commits).
        con.execute("BEGIN")
        snapshot_id = None if self._layout.sharded else scalar(con, f"SELECT * FROM {LAKE}.current_snapshot()") + 1
        if staged.positions or staged.new_positions:
            # 4. The accepted positions were picked in step 2 (`StoredVersions.judge`):
            # new keys, or a version >= the stored one. >=: after a crash the replayed
            # epoch may re-derive a version with other content (live clock, partitions
            # interleaving anew); the fold continues from the replay, so the replay's row
            # is the true one.
            accepted = " UNION ALL ".join(
                f"SELECT site_id, sku FROM {table}"
                for table, present in (
                    ("stage_positions", staged.positions),
                    ("stage_new_positions", staged.new_positions),
                )
                if present
            )
            # 5. Inbound lines of accepted keys: delete, then insert the new ones (staged
            # for the accepted keys only).
            inbound = names["inbound"]
            con.execute(
                f"DELETE FROM {LAKE}.{inbound} USING ({accepted}) a "
                f"WHERE {inbound}.site_id = a.site_id AND {inbound}.sku = a.sku"
            )
            # Columns by name: a store upgraded in place has them in another order.
            if staged.inbound:
                inbound_columns = ", ".join(INBOUND.names)
                con.execute(
                    f"INSERT INTO {LAKE}.{inbound} ({inbound_columns}) SELECT {inbound_columns} FROM stage_inbound"
                )
            # 6. Positions: appended to the recent table, stored and new keys alike (the
            # view `positions` takes the newest per key); nothing of the table is read.
            # `new_key` marks a key's first row, so the view's count needs no join.
            position_columns = ", ".join(TABLES["positions"].names)
            rows = " UNION ALL ".join(
                f"SELECT {position_columns}, {fresh} FROM {table}"
                for table, fresh, present in (
                    ("stage_positions", "false", staged.positions),
                    ("stage_new_positions", "true", staged.new_positions),
                )
                if present
            )
            con.execute(f"INSERT INTO {LAKE}.{self._recent} ({position_columns}, new_key) {rows}")
        # 7. Offers, reservations and work.
        if staged.offers:
            merge(con, "offers", names["offers"], "stage_offers", "s.updated_at > t.updated_at")
        if staged.reservations:
            merge(
                con,
                "reservations",
                names["reservations"],
                "stage_reservations",
                # Replace unless the stored decision is terminal and newer; at the
                # same instant a terminal status beats a non-terminal one.
                f"NOT (t.status IN ({_TERMINAL_SQL}) AND (t.decided_at > s.decided_at "
                f"OR (t.decided_at = s.decided_at AND s.status NOT IN ({_TERMINAL_SQL}))))",
            )
        for table, present in (
            ("store_tasks", staged.tasks),
            ("transport_loads", staged.loads),
            ("dropship_orders", staged.orders),
        ):
            if present:
                merge(con, table, names[table], f"stage_{table}", "s.rank > t.rank")
        # 8. The snapshot_info (snapshot_log) row.
        record = PublishRecord(snapshot_id, self._index, now, events_applied, max_occurred)
        info = SNAPSHOT_INFO if snapshot_id is not None else SNAPSHOT_LOG_TABLE
        placeholders = ", ".join(from_millis("?::BIGINT") if c.sql == "MILLIS" else "?" for c in info.columns)
        con.execute(
            f"INSERT INTO {LAKE}.{names['snapshot_info']} ({', '.join(info.names)}) VALUES ({placeholders})",
            info.values(record),
        )
        # 9. Commit and read the id DuckLake gave it.
        con.execute("COMMIT")
        committed = scalar(con, f"SELECT * FROM ducklake_last_committed_snapshot('{LAKE}')")
        return snapshot_id, committed

    def _stored_versions(self) -> StoredVersions:
        """The kept versions of this writer's positions, read from the lake when there are none or they are stale."""
        # In the commit lock: a fold committing meanwhile would move `_seen` and the recent rows.
        try:
            with self._committing():
                if self._versions is not None and self._changed_by_others():
                    self._versions = None
                if self._versions is None:
                    seen = scalar(self._con, f"SELECT * FROM {LAKE}.current_snapshot()")
                    self._versions = StoredVersions.load(self._con, self._names["positions"])
                    self._recent_rows = scalar(self._con, f"SELECT count(*) FROM {LAKE}.{self._recent}")
                    self._seen = seen
        except duckdb.Error as exc:
            msg = f"cannot read the stored position versions of the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        return self._versions

    def _changed_by_others(self) -> bool:
        """Whether a snapshot this writer did not make came after `_seen` (one writer alone).

        Nobody else should commit (the writer lock keeps other writers out), but an
        operator's SQL repair may; with the kept versions stale, a key inserted by hand
        would be inserted again. One catalog read. With several writers the others commit
        all the time and telling their snapshots from a repair of this writer's tables
        would mean reading every snapshot's changes at each publish: not checked there
        (repair a store of several writers with all of them stopped).
        """
        if self._layout.sharded:
            return False
        return scalar(self._con, f"SELECT * FROM {LAKE}.current_snapshot()") != self._seen

    def heartbeat(self, now: Millis) -> None:
        """Record that the newest snapshot is current as of `now` (DIR/heartbeat.json, replaced atomically).

        Readers take a snapshot's age from this, not from its creation: a ledger with
        nothing new to publish is not stale; one whose flow stopped is. With several
        writers each writes its own (DIR/heartbeat-{i}.json); see `read_heartbeat`.
        """
        info = self._last_info
        record = {"at": now, "snapshot_id": info.get("snapshot_id") if info else None}
        target = heartbeat_file(self._dir, self._layout, self._index)
        scratch = target.with_suffix(".tmp")
        try:
            scratch.write_text(json.dumps(record))
            os.replace(scratch, target)
        except OSError as exc:
            msg = f"cannot write the heartbeat {target}: {exc.strerror}"
            raise SnapshotError(msg) from exc

    def last_snapshot_info(self) -> dict[str, object] | None:
        """The snapshot_info row of this writer's last publish (None for a store never published)."""
        if not self._last_info:
            return None
        return {k: v for k, v in self._last_info.items() if k != "max_occurred_at_ms"}

    def _read_last_info(self) -> dict[str, object]:
        # Read once at open and then kept in memory: the table grows by a row per publish
        # and publishing must not cost more as it grows.
        if self._layout.sharded:
            query = (
                f"SELECT snapshot_id, created_at, events_applied, max_occurred_at, "
                f"epoch_ms(max_occurred_at) AS max_occurred_at_ms FROM {LAKE}.{SNAPSHOT_LOG} "
                f"WHERE writer = {int(self._index)} ORDER BY snapshot_id DESC LIMIT 1"
            )
        else:
            query = (
                f"SELECT *, epoch_ms(max_occurred_at) AS max_occurred_at_ms "
                f"FROM {LAKE}.snapshot_info ORDER BY snapshot_id DESC LIMIT 1"
            )
        try:
            rows = dicts(self._con.execute(query))
        except duckdb.Error as exc:
            msg = f"cannot read snapshot_info in the snapshot store {self._dir}: {exc}"
            raise SnapshotError(msg) from exc
        return rows[0] if rows else {}

    # -- maintenance

    def maintain(self, *, keep_snapshots_for: timedelta) -> MaintenanceReport:
        """Compact files and expire snapshots older than `keep_snapshots_for` (see `maintenance.maintain`).

        Creates snapshots of its own (no snapshot_info row), so publish ids after it jump.
        """
        # Not beside a fold: phase 2 deletes base rows by the `rowid`s phase 1 read.
        self.wait_for_fold()
        report = maintain(self._con, self._dir, self._layout, self._index, keep_snapshots_for=keep_snapshots_for)
        if self._versions is not None:
            # Maintenance moves rows between files and changes no version: still right.
            try:
                self._seen = scalar(self._con, f"SELECT * FROM {LAKE}.current_snapshot()")
            except duckdb.Error:
                self._versions = None
        return report

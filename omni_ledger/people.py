"""The simulated people of the living retailer: customers, clerks and drivers using the API.

`omni-ledger up` (`make run`) runs them beside the flow and the API, so the store tasks,
the shuttle board and the dropship orders fill as they would in a real network:

- a customer comes every `customer_every` seconds (a seeded draw): near a store, she asks
  for one of the popular skus, with an appointment most of the time, and takes the
  best option or one of the next ones (a transfer, a dropship, a seller's offer are then
  made as often as the network offers them), confirmed through `POST /v1/confirm`;
- a clerk picks each shuttle task at a moment drawn between when it was first seen and
  its cut-off (`due_at`), never after it;
- a driver loads each picked parcel in the quarter of an hour before its run departs and
  scans it in at its arrival.

Stores whose index in the network is a multiple of `leave_every` are left to people in
the console: their clerks' tasks, and the parcels leaving or reaching them, wait for a
click. Every action goes through the HTTP API with a write token, as a person's would;
a refusal (409: the reservation ended; 404: not planned any more) is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.shutdown import StopFlag
from ledger.network import Network

__all__ = ["People", "PeopleConfig"]

_LOG = logging.getLogger("omni_ledger.people")
_KM_PER_DEGREE = 111.2
_HOT_SKUS = 40  # the simulator's popular fifth of its default 200 skus
_BOARDING_S = 15 * 60.0  # drivers scan parcels on board in the quarter of an hour before departure


@dataclass(frozen=True, slots=True)
class PeopleConfig:
    """How often and how the simulated people act."""

    url: str
    token: str
    seed: int = 7
    customer_every: float = 15.0
    """Mean seconds between two customers (exponential draws)."""
    appointment_share: float = 0.7
    leave_every: int = 4
    """Stores at an index multiple of this are left to a person in the console (0: none)."""
    round_every: float = 5.0
    """Seconds between two rounds of the clerks and the drivers."""
    skus: int = _HOT_SKUS


class ApiError(Exception):
    """The API answered an error (status and message), or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class People:
    """Customers, clerks and drivers acting on the API until `stop` is set."""

    def __init__(self, config: PeopleConfig, network: Network, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._network = network
        self._clock = clock
        self._rng = random.Random(config.seed)
        stores = [site for site in network.sites if site.kind.value == "STORE"]
        self._stores = stores
        left = config.leave_every
        self._left = {site.id for index, site in enumerate(stores) if left and index % left == 0}
        self._picks: dict[str, float] = {}
        self._customers = 0
        self._bounded: bool | None = None
        self._sent: set[str] = set()
        self.done: dict[str, int] = {"confirmed": 0, "rejected": 0, "picked": 0, "loaded": 0, "arrived": 0}

    @property
    def left_to_people(self) -> frozenset[str]:
        """The stores whose work waits for a person in the console."""
        return frozenset(self._left)

    def run(self, stop: StopFlag) -> None:
        """Act until `stop` is set: customers at their drawn times, clerk and driver rounds in between."""
        next_customer = self._clock() + self._rng.expovariate(1 / self._config.customer_every)
        while not stop.is_set():
            now = self._clock()
            if now >= next_customer:
                self._safely(self.customer)
                next_customer = now + self._rng.expovariate(1 / self._config.customer_every)
            self._safely(self.clerks)
            self._safely(self.drivers)
            end = min(next_customer, self._clock() + self._config.round_every)
            while not stop.is_set() and self._clock() < end:
                time.sleep(0.1)

    def _safely(self, act: Callable[[], object]) -> None:
        try:
            act()
        except ApiError as exc:
            # The API not ready yet (503 before the first snapshot) or gone: the next round retries.
            _LOG.info("%s: %s; trying again next round", act.__name__, exc)

    # -- the people ------------------------------------------------------------------------------

    def customer(self) -> str | None:
        """One customer: a promise near a store, then a confirm of a chosen option. The decision's status."""
        rng = self._rng
        self._customers += 1
        store = self._stores[int(rng.random() * len(self._stores))]
        # Within 2 km of her store, so it is the nearest and the others rank by distance.
        lat = store.lat + rng.uniform(-2, 2) / _KM_PER_DEGREE
        lon = store.lon + rng.uniform(-2, 2) / _KM_PER_DEGREE
        sku = f"SKU-{int(rng.random() ** 2 * self._config.skus):05d}"
        appointment = rng.random() < self._config.appointment_share
        body: dict[str, Any] = {"items": [{"sku": sku, "qty": 1}], "lat": lat, "lon": lon, "appointment": appointment}
        options = self._promise(body).get("options") or []
        if not options:
            return None
        # Most take the best (most often in store); the others want it delivered to their store from
        # elsewhere (a shuttle, a supplier's dropship) or home (a DC's carrier, a seller's offer).
        r = rng.random()
        wanted = (
            "TRANSFER_TO_STORE"
            if r < 0.35
            else "DROPSHIP_TO_STORE"
            if r < 0.5
            else "HOME_DELIVERY"
            if r < 0.55
            else None
        )
        choice = next((o for o in options if o.get("mode") == wanted), options[0])
        customer = f"Customer {self._customers:05d}"
        confirm = {**body, "option_id": choice["option_id"], "customer": customer}
        decided = self._call("POST", "/v1/confirm", confirm)
        status = str(decided.get("status"))
        self.done["confirmed" if status == "ACCEPTED" else "rejected"] += 1
        _LOG.info(
            "%s reserved %s (%s from %s): %s",
            customer,
            sku,
            choice.get("mode"),
            choice.get("source_id"),
            status,
            extra={"sku": sku, "option_id": choice.get("option_id"), "status": status},
        )
        return status

    def clerks(self) -> int:
        """The clerks' round: each open shuttle task picked at its drawn moment before its cut-off."""
        now = self._clock()
        done = 0
        # Only where a planned parcel leaves from: one request for the board, not one per site.
        loads = self._call("GET", "/v1/loads").get("loads") or []
        origins = sorted({str(x.get("origin")) for x in loads if x.get("status") == "PLANNED"})
        for origin in origins:
            if origin in self._left:
                continue
            tasks = self._call("GET", f"/v1/stores/{origin}/tasks?status=OPEN").get("tasks") or []
            for task in tasks:
                if task.get("kind") != "PICK_FOR_SHUTTLE":
                    continue
                task_id = str(task["task_id"])
                due = _seconds(task.get("due_at"))
                if task_id not in self._picks:
                    # Between now and the cut-off, leaving a minute's margin before it.
                    span = max(0.0, (due or now) - now - 60)
                    self._picks[task_id] = now + self._rng.random() * min(span, 600.0)
                if now >= self._picks[task_id] and self._act(f"/v1/tasks/{task_id}/picked"):
                    self.done["picked"] += 1
                    done += 1
        return done

    def drivers(self) -> int:
        """The drivers' round: picked parcels loaded as their shuttle leaves, scanned in at their arrival."""
        now = self._clock()
        done = 0
        picked: dict[str, set[str]] = {}  # per origin, the parcels its clerks have isolated
        for load in self._call("GET", "/v1/loads").get("loads") or []:
            origin, destination = load.get("origin"), load.get("destination")
            if origin in self._left or destination in self._left:
                continue
            parcel, status = str(load["parcel_id"]), load.get("status")
            departs, arrives = _seconds(load.get("departs_at")), _seconds(load.get("arrives_at"))
            # Scanned on board in the last minutes before departure: the hold ends as the shuttle leaves.
            if status == "PLANNED" and departs is not None and departs - _BOARDING_S <= now < departs:
                if origin not in picked:
                    tasks = self._call("GET", f"/v1/stores/{origin}/tasks?status=DONE").get("tasks") or []
                    picked[str(origin)] = {str(t.get("parcel_id")) for t in tasks}
                if parcel in picked[str(origin)] and self._act(f"/v1/loads/{parcel}/loaded"):
                    self.done["loaded"] += 1
                    done += 1
            elif status == "LOADED" and now >= (arrives or now + 1) and self._act(f"/v1/loads/{parcel}/arrived"):
                self.done["arrived"] += 1
                done += 1
        return done

    # -- HTTP ------------------------------------------------------------------------------------

    def _promise(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A promise with every option (`limit` 100 where the API bounds its answers, else all of them)."""
        if self._bounded is not False:
            try:
                answer = self._call("POST", "/v1/promise", {**body, "limit": 100})
            except ApiError as exc:
                if exc.status != 422:
                    raise
                self._bounded = False  # an API without `limit`: it answers every option anyway
            else:
                self._bounded = True
                return answer
        return self._call("POST", "/v1/promise", body)

    def _act(self, path: str) -> bool:
        if path in self._sent:
            # Done already: the snapshot showing it has not been published yet (a repeat would be ignored).
            return False
        try:
            self._call("POST", path)
        except ApiError as exc:
            if exc.status in (404, 409):
                # Cancelled, already done, or not planned any more: nothing for this person to do.
                _LOG.debug("%s: %s", path, exc)
                return False
            raise
        self._sent.add(path)
        return True

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._config.url.rstrip("/") + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._config.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            raise ApiError(exc.code, f"{method} {path}: {message}") from exc
        except (OSError, ValueError) as exc:
            raise ApiError(0, f"{method} {path}: {exc}") from exc


def _seconds(iso: object) -> float | None:
    """Epoch seconds of an API timestamp (`2026-12-02T07:00:00Z`), or None."""
    if not isinstance(iso, str) or not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()

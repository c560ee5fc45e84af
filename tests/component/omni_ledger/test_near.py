"""Availability near a point from the read model's arrays is the row-by-row reference answer, to the last float."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.snapshot_store.read_model import ReadView
from ledger.network import Network, Site, SourceKind
from omni_ledger.service.near import NearbyAvailability
from omni_ledger.service.reads import reference_near

SKUS = ("A", "B", "C")
KINDS = (SourceKind.STORE, SourceKind.DC, SourceKind.SUPPLIER, SourceKind.SELLER)
T0 = 1_790_000_000_000


@st.composite
def places(draw: st.DrawFn) -> tuple[float, float]:
    """Anywhere, but mostly in a few clusters (so radii of a few km keep and drop sites), near a pole or the
    antimeridian too (where the grid gives up and the bound must not)."""
    centre = draw(st.sampled_from([(45.7, 4.8), (89.9, 10.0), (-33.9, 179.95), (0.0, -179.99), (51.5, -0.1)]))
    if draw(st.booleans()):
        return draw(st.floats(-90, 90)), draw(st.floats(-180, 180))
    lat = max(-90.0, min(90.0, centre[0] + draw(st.floats(-0.6, 0.6))))
    lon = centre[1] + draw(st.floats(-0.6, 0.6))
    return lat, (lon + 180.0) % 360.0 - 180.0


@st.composite
def scenes(draw: st.DrawFn) -> tuple[Network, ReadView, list[tuple[str, float, float, float, int | None]]]:
    sites = []
    for n in range(draw(st.integers(1, 12))):
        lat, lon = draw(places())
        sites.append(Site(f"S{n:02d}", f"site {n}", draw(st.sampled_from(KINDS)), lat, lon, "Europe/Paris"))
    network = Network(sites=tuple(sites))
    # The view also holds sites the network does not know (listed whatever the point).
    ids = [s.id for s in sites] + draw(st.lists(st.sampled_from(["A0", "S99", "Z9"]), unique=True))
    counts = st.integers(-(2**40), 2**40) if draw(st.booleans()) else st.integers(-5, 50)

    def publish(view: ReadView, snapshot_id: int) -> ReadView:
        rows, lines = [], {}
        for site in ids:
            for sku in SKUS:
                if draw(st.booleans()):
                    figures = (draw(counts), draw(counts), draw(counts), draw(counts), draw(counts))
                    negative, updated = draw(st.booleans()), draw(st.integers(0, T0))
                    rows.append((sku, (site, *figures, negative, updated)))
                    lines[(site, sku)] = tuple(
                        (f"PO-{site}-{sku}-{k}", draw(st.integers(1, 9)), T0 + draw(st.integers(-9, 9)) * 3_600_000, p)
                        for k, p in enumerate(draw(st.lists(st.booleans(), max_size=3)))
                    )
        return view.changed(snapshot_id, rows, lines, {})

    view = publish(ReadView(1), 1)
    for snapshot_id in range(2, draw(st.integers(2, 3)) + 1):
        view = publish(view, snapshot_id)  # refreshed: sites and skus new to the model, counts widened
    asks = []
    for _ in range(draw(st.integers(1, 6))):
        lat, lon = draw(places())
        radius = draw(st.sampled_from([0.0, 0.5, 5.0, 30.0, 80.0, 2_000.0, 30_000.0]) | st.floats(0, 200))
        by = draw(st.none() | st.integers(-10, 10).map(lambda h: T0 + h * 3_600_000))
        asks.append((draw(st.sampled_from([*SKUS, "NONE"])), lat, lon, radius, by))
    return network, view, asks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_availability_from_the_arrays_equals_the_row_by_row_reference(scene) -> None:  # type: ignore[no-untyped-def]
    network, view, asks = scene
    near = NearbyAvailability(network)
    for sku, lat, lon, radius, by in asks:
        expected = reference_near(network, view, sku, lat=lat, lon=lon, radius_km=radius, by=by)
        answer = near.answer(view, sku, lat=lat, lon=lon, radius_km=radius, by=by)
        assert answer == expected
        if answer is not None:
            # The same JSON too: same keys in the same order, same types (an int is not a numpy int).
            assert [list(site) for site in answer["sites"]] == [list(site) for site in expected["sites"]]
            assert [type(v) for s in answer["sites"] for v in s.values()] == [
                type(v) for s in expected["sites"] for v in s.values()
            ]


def test_a_site_just_inside_the_radius_is_shown_and_one_just_outside_is_not() -> None:
    network = Network(
        sites=(
            Site("IN", "in", SourceKind.STORE, 45.0, 4.0 + 0.0899, "Europe/Paris"),
            Site("OUT", "out", SourceKind.STORE, 45.0, 4.0 + 0.0901, "Europe/Paris"),
        )
    )
    view = ReadView(1).changed(
        1, [("A", ("IN", 1, 1, 0, 0, 0, False, 0)), ("A", ("OUT", 2, 2, 0, 0, 0, False, 0))], {}, {}
    )
    radius = round(network.distance_km("IN", 45.0, 4.0), 3)
    answer = NearbyAvailability(network).answer(view, "A", lat=45.0, lon=4.0, radius_km=radius, by=None)
    assert answer is not None
    assert [site["site_id"] for site in answer["sites"]] == ["IN"]
    assert answer == reference_near(network, view, "A", lat=45.0, lon=4.0, radius_km=radius, by=None)

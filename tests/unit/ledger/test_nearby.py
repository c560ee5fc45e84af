"""The grid finds every site within a radius that measuring each site finds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.fulfilment import SourceKind
from ledger.nearby import candidates, distances_km
from ledger.network import Network, Site

pytestmark = pytest.mark.unit


@st.composite
def sites(draw: st.DrawFn) -> Network:
    found = []
    for n in range(draw(st.integers(1, 60))):
        lat = draw(st.floats(-89.9, 89.9, allow_nan=False))
        lon = draw(st.floats(-179.9, 179.9, allow_nan=False))
        found.append(Site(f"S{n:02d}", f"S{n:02d}", SourceKind.STORE, lat, lon, "UTC"))
    return Network(tuple(found))


@settings(max_examples=300, deadline=None)
@given(
    sites(),
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.floats(0.001, 3000, allow_nan=False),
)
def test_every_site_within_the_radius_is_a_candidate_in_network_order(network, lat, lon, radius) -> None:  # type: ignore[no-untyped-def]
    found = candidates(network, lat, lon, radius)
    inside = [site.id for site in network.sites if network.distance_km(site.id, lat, lon) <= radius]
    assert set(inside) <= set(found)
    order = [site.id for site in network.sites]
    assert list(found) == sorted(found, key=order.index)


def test_a_site_next_to_the_customer_is_found_and_one_far_away_is_not_measured() -> None:
    network = Network(
        (
            Site("LYON", "Lyon", SourceKind.STORE, 45.764, 4.8357, "Europe/Paris"),
            Site("LILLE", "Lille", SourceKind.STORE, 50.6292, 3.0573, "Europe/Paris"),
        )
    )
    assert candidates(network, 45.75, 4.85, 50.0) == ("LYON",)


@settings(max_examples=300, deadline=None)
@given(sites(), st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False), st.randoms())
def test_distances_measured_in_bulk_are_the_networks_own_to_the_last_bit(network, lat, lon, rng):
    ids = [site.id for site in network.sites]
    rng.shuffle(ids)
    assert distances_km(network, ids, lat, lon) == [network.distance_km(site, lat, lon) for site in ids]

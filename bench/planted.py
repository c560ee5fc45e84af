"""Shards planted with N positions without folding each one: the benches' fast preload.

Folding 20,000,000 positions through `ledger.fold` takes ~40 min of CPU here. A planted
shard holds real positions instead: one receipt of 10 units folded by `ledger.fold` into
a shard and packed into columns (the template), its row replicated under each key of the
shard's share of N (site, sku) keys, with the shard's own open-addressing index, as one
whole `ShardImage` that `Shard.restore` adopts by copying bytes. Every planted position
is the same plain position under its own key, in the shard `shard_of` routes it to.
"""

from __future__ import annotations

import zlib
from array import array

from bench.common import say
from ledger.effects import split
from ledger.events import EventType, InventoryEvent
from ledger.policy import LedgerPolicy
from ledger.shard import Shard, ShardImage, position_key

__all__ = ["SITES", "T0", "planted_images", "sku_name"]

SITES = 1_000
T0 = 1_790_000_000_000


def sku_name(index: int, width: int) -> str:
    """The sku of key index `index`: `SKU-` and `width` digits (the benches' own naming)."""
    return f"SKU-{index:0{width}d}"


def _template() -> ShardImage:
    """One real position, packed: a receipt of 10 folded, then an idle interval (columns, no object)."""
    shard = Shard()
    effect = split(InventoryEvent("template", EventType.RECEIVED, T0, "ST-T", "SKU-T", 10))[0]
    shard.fold(position_key("ST-T", "SKU-T"), [(T0, effect)], LedgerPolicy())
    shard.take_changed()
    shard.take_changed()  # a whole interval without a fold: packed into columns
    image = shard.image()
    assert len(image) == 1
    assert not image.objects
    return image


def _shares(positions: int, shards: int, width: int) -> tuple[list[array[int]], int]:
    """Per shard, the keys `site << 32 | sku` of its share of N positions (1,000 sites); and how many skus."""
    skus = -(-positions // SITES)
    shares = [array("q") for _ in range(shards)]
    # crc32 continues from a prefix's: each site's is computed once, each key adds "|SKU-...".
    site_crcs = [zlib.crc32(f"ST-{s:04d}".encode()) for s in range(SITES)]
    made = 0
    for k in range(skus):
        suffix = f"|{sku_name(k, width)}".encode()
        for s in range(min(SITES, positions - made)):
            shares[zlib.crc32(suffix, site_crcs[s]) % shards].append(s << 32 | k)
        made = min(positions, made + SITES)
        if k % 4_000 == 0:
            say(f"  keys: {made:,}/{positions:,}")
    return shares, skus


def _whole_image(keys: array[int], template: ShardImage, sites: tuple[str, ...], skus: tuple[str, ...]) -> ShardImage:
    """A shard's base: every row the template's packed position, under `keys`, with the index a restore adopts."""
    n = len(keys)
    tail = template.tails[: int.from_bytes(template.tail_len, "little", signed=True)]
    return ShardImage.of_rows(
        sites,
        skus,
        keys,
        template.numbers * n,
        (array("q", range(0, n * len(tail), len(tail))).tobytes(), array("i", [len(tail)]).tobytes() * n, tail * n),
    )


def planted_images(positions: int, shards: int, *, width: int = 7) -> list[ShardImage]:
    """One whole image per shard, together holding `positions` distinct positions (1,000 sites x N/1,000 skus).

    Position i is site `ST-{i % 1000:04d}`, sku `sku_name(i // 1000, width)`.
    """
    template = _template()
    shares, sku_count = _shares(positions, shards, width)
    sites = tuple(f"ST-{s:04d}" for s in range(SITES))
    skus = tuple(sku_name(k, width) for k in range(sku_count))
    images = []
    for i in range(shards):
        images.append(_whole_image(shares[i], template, sites, skus))
        shares[i] = array("q")  # free the keys as their image is made
    return images

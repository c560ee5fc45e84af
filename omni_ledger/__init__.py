"""omni-ledger: a real-time inventory ledger for omnichannel retail."""

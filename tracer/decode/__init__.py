"""Decoding captured bytes: RESP requests and replies, key specs, redaction, cluster-bus messages."""

"""Stitching records into requests, connections and busy spans; redirects joined across nodes."""

"""The always-on engine: requests parsed, stitched and aggregated in the kernel (probes/engine.c).

User space seeds the command table, reads the per-CPU histograms once per refresh
(`EngineSession.snapshot()`), and decodes the few per-request records the kernel sends
(slow, stalled, sampled requests) plus the raw reads it could not parse.
"""

"""redis-tracer: an eBPF request-path tracer for Redis."""
__version__ = "0.1.0"

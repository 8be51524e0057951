"""BPF C sources, shipped as package data (installed as tracer.probes)."""

"""Throw-away redis-servers and a workload, for the demo, the tests and the benchmarks."""

"""Kernel side: the record layout, probe loading and attaching, the ring buffer reader, targets, fd classification, privileges, the environment doctor."""

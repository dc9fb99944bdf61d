"""Serving: the daemon, its HTTP server, metrics, leases, claims and health."""

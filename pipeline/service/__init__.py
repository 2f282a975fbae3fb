"""The service's logic, with no Ray: the control plane in Redis, admission of stream URLs,
the router's decisions, and the ingest of streams. ``serve/`` wires these into Ray Serve
deployments and holds no logic of its own."""

"""Test support shared by every test folder: sample data and tiny models (data), free ports
(net), bounded waits (wait), Prometheus scrapes (metrics), real mlserve processes (servers),
Redis for the Redis-backed tests (redis), a hand-moved clock (clock), the import probe of the
CLI tests (probe), the README example runner (readme) and the schemathesis runner (fuzz).

Imported as `support` (the tests folder is on sys.path); real server processes get the tests
folder on their PYTHONPATH too, so test-only estimators unpickle there."""

"""Helpers shared by tests (and a few benchmarks): real peers, servers, signals, vendor SDK set-up.

Test modules import from here and never from one another (tests/unit/test_test_imports.py checks
this); pytest fixtures that wrap these helpers live in the conftest.py next to the tests."""

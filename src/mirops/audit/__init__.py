"""Dataset audits as Great Expectations suites."""

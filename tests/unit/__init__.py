"""Unit tier: pure logic and tiny models in one process; seconds each (`make test-fast`)."""

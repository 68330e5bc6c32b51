"""Helpers shared by the test tiers: fakes for unit tests of the logic around them, worker scripts, fixtures."""

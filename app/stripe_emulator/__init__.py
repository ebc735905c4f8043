"""Offline Stripe emulator: a small, stateful imitation of the Stripe API for tests and local development."""

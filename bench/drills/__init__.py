"""Failure drills: real processes on PostgreSQL + Redis, killed, stopped and cut off for real."""

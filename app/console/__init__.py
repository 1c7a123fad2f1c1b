"""The web console: server-rendered pages at `/` for the product owner (see README, "Web console")."""

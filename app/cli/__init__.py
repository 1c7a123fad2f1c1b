"""The command line\x27s own commands: `botarmy run` and the client commands of a running server."""

"""The real components the dev stack and the tests start on these machines (DESIGN §6).

Each service starts idempotently (an instance we started earlier is reused), listens on 127.0.0.1
only, writes its PID under the state folder and is stopped by that PID, never by name.
"""
